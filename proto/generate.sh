#!/usr/bin/env bash
# Regenerates Sources/Messages/Generated/*.pb.swift from proto/**/*.proto.
# Needs Debian's protoc (apt-get install protobuf-compiler) and builds protoc-gen-swift from the mirrored
# swift-protobuf once (about 2.5 minutes; cached under .build/proto-tools). Never run by CI: the generated code
# is committed. Run it after editing any .proto file and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTO=proto
OUT=Sources/Messages/Generated
VERSION=1.39.0                                   # must equal the exact swift-protobuf pin in Package.swift
TOOLS=.build/proto-tools/swift-protobuf-$VERSION
PLUGIN=$TOOLS/.build/release/protoc-gen-swift

command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
if [ ! -x "$PLUGIN" ]; then
  rm -rf "$TOOLS"; mkdir -p "$(dirname "$TOOLS")"
  git clone -q --depth 1 --branch "$VERSION" https://github.com/apple/swift-protobuf.git "$TOOLS"
  (cd "$TOOLS" && swift build -c release --product protoc-gen-swift)
fi
mkdir -p "$OUT"
find "$OUT" -name '*.pb.swift' -delete
protoc --plugin=protoc-gen-swift="$PLUGIN" \
  -I "$PROTO" -I "$TOOLS/Protos/Sources/SwiftProtobuf" \
  --swift_out="$OUT" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores --swift_opt=UseAccessLevelOnImports=true \
  $(cd "$PROTO" && find . -name '*.proto' | sed 's|^\./||' | sort)
echo "generated: $(ls "$OUT")"
