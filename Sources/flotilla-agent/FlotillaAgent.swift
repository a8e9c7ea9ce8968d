import ArgumentParser

@main
struct FlotillaAgent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-agent",
        abstract: "Run a Flotilla agent: joins the cluster, runs the tasks assigned to this node, and runs its load balancer.",
        discussion: "Joining a cluster (--controller, --token) arrives with the membership work; this build has no agent functions yet.",
        version: "0.1.0")

    func run() throws {
        throw ValidationError("this build of flotilla-agent cannot join a cluster yet (see docs/architecture.md, 'Roadmap')")
    }
}
