#!/usr/bin/env bash
# Builds Flotilla's demo image: an OCI image layout with Debian's static busybox whose web server answers
#
#   hello from task <FLOTILLA_TASK_ID> on node <FLOTILLA_NODE> (request N)
#
# to every GET, so load balancing across replicas is visible. Used by deploy/quickstart.sh and the tests.
#
#   deploy/images/build-demo.sh OUT_DIR [TAG]      (TAG defaults to 1)
#
# Then: flotilla service create hello --driver oci --image oci:OUT_DIR:TAG --publish 8080:8080/http
# The server listens on $PORT (8080 when unset). The page is a CGI script (cgi-bin/index.cgi), run per request
# with the task's environment; /healthz answers "ok" (a static file) for HTTP checks. Applets in the image:
# sh, httpd, wget (for check commands) and a few shell basics.
#
# Needs /bin/busybox (apt-get install busybox-static) and python3; no network. The output is deterministic:
# sorted entries, fixed times, owners and gzip header, so the same busybox gives the same digests. OUT_DIR is
# created when missing; an existing layout keeps its other tags (this tag is replaced).
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$1
tag=${2:-1}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "build-demo: no $busybox (apt-get install busybox-static)" >&2; exit 1; }
if ! "$busybox" 2>/dev/null | grep -q httpd; then echo "build-demo: $busybox has no httpd applet" >&2; exit 1; fi

exec python3 - "$out" "$tag" "$busybox" <<'PY'
import gzip, hashlib, io, json, os, platform, sys, tarfile

out, tag, busybox = sys.argv[1:4]

ENTRYPOINT = r"""#!/bin/sh
# Flotilla's demo server: busybox httpd on $PORT (8080 when unset), the page is cgi-bin/index.cgi.
exec httpd -f -p "${PORT:-8080}" -h /www
"""
PAGE = r"""#!/bin/sh
# One answer per request, with the task's environment (FLOTILLA_TASK_ID, FLOTILLA_NODE from the agent).
count=$(( $(cat /tmp/requests 2>/dev/null || echo 0) + 1 ))
echo "$count" > /tmp/requests
printf 'Content-Type: text/plain\r\n\r\n'
printf 'hello from task %s on node %s (request %s)\n' "${FLOTILLA_TASK_ID:-unknown}" "${FLOTILLA_NODE:-unknown}" "$count"
"""
APPLETS = ["cat", "date", "echo", "env", "false", "hostname", "httpd", "kill", "ls", "mkdir", "printf", "ps",
           "sh", "sleep", "true", "wget"]
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
        "riscv64": "riscv64"}.get(platform.machine(), platform.machine())

def entry(name, kind=tarfile.REGTYPE, mode=0o755, data=b"", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data

entries = [entry(d, tarfile.DIRTYPE) for d in ("bin", "dev", "etc", "proc", "sys", "www", "www/cgi-bin")]
entries.append(entry("tmp", tarfile.DIRTYPE, mode=0o1777))
entries.append(entry("bin/busybox", data=open(busybox, "rb").read()))
entries += [entry("bin/" + name, tarfile.SYMTYPE, mode=0o777, link="busybox") for name in APPLETS]
entries.append(entry("bin/flotilla-demo", data=ENTRYPOINT.encode()))
entries.append(entry("www/cgi-bin/index.cgi", data=PAGE.encode()))
entries.append(entry("www/healthz", mode=0o644, data=b"ok\n"))
entries.append(entry("etc/passwd", mode=0o644, data=b"root:x:0:0:root:/root:/bin/sh\n"))
entries.append(entry("etc/group", mode=0o644, data=b"root:x:0:\n"))
entries.sort(key=lambda e: e[0].name)

tar = io.BytesIO()
with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
    for info, data in entries:
        t.addfile(info, io.BytesIO(data) if data else None)
raw = tar.getvalue()
compressed = io.BytesIO()
with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="") as z:
    z.write(raw)

if os.path.exists(out) and os.listdir(out) and not os.path.exists(os.path.join(out, "oci-layout")):
    sys.exit(f"build-demo: {out} exists and is not an OCI image layout; give a new or empty directory")
os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

def blob(data, media):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest)
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)
    return {"mediaType": media, "digest": "sha256:" + digest, "size": len(data)}

def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

layer = blob(compressed.getvalue(), "application/vnd.oci.image.layer.v1.tar+gzip")
config = blob(canonical({
    "architecture": ARCH, "os": "linux",
    "config": {"Entrypoint": ["/bin/flotilla-demo"], "Env": ["PATH=/bin"], "WorkingDir": "/",
               "ExposedPorts": {"8080/tcp": {}},
               "Labels": {"org.opencontainers.image.title": "flotilla-demo",
                          "org.opencontainers.image.description": "answers with its task id and node name"}},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    "history": [{"created_by": "deploy/images/build-demo.sh"}],
}), "application/vnd.oci.image.config.v1+json")
manifest = blob(canonical({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": [layer]}), "application/vnd.oci.image.manifest.v1+json")
manifest["annotations"] = {"org.opencontainers.image.ref.name": tag}

index_path = os.path.join(out, "index.json")
index = json.load(open(index_path)) if os.path.exists(index_path) else {"schemaVersion": 2, "manifests": []}
index["manifests"] = [m for m in index.get("manifests", [])
                      if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag] + [manifest]
with open(index_path + ".tmp", "wb") as f:
    f.write(canonical(index))
os.rename(index_path + ".tmp", index_path)
with open(os.path.join(out, "oci-layout"), "wb") as f:
    f.write(canonical({"imageLayoutVersion": "1.0.0"}))
print(f"build-demo: oci:{out}:{tag} -> {manifest['digest']} ({layer['size']} bytes compressed)")
PY
