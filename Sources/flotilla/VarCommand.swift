import AdminClient
import ArgumentParser
import Foundation
import Wire

/// `flotilla var …`: the cluster's replicated key/value variables.
struct VarCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "var",
        abstract: "Set, read, list and delete variables (replicated key/value pairs).",
        discussion: """
            Writes go to the leader (the CLI follows the redirect); reads are linearizable unless --stale. \
            Every write returns its Raft index, which is the key's new modify index: pass it to --cas to \
            update or delete only if nobody changed the key since.
            """,
        subcommands: [Put.self, Get.self, List.self, Remove.self])

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "put",
            abstract: "Set a variable and print its new modify index.",
            discussion: "A failed --cas exits 1 with the key's current index in the message.")

        @Argument(help: "The key: visible ASCII, no leading '/', at most 512 bytes.")
        var key: String

        @Argument(help: "The value, stored as its UTF-8 bytes (at most 512 KiB).")
        var value: String

        @Option(help: ArgumentHelp(
            "Write only if the key's modify index is this (0: only if the key does not exist).", valueName: "index"))
        var cas: UInt64?

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let index = try await cluster.withClient {
                try await $0.varPut(key: key, value: Data(value.utf8), cas: cas)
            }
            switch cluster.output {
            case .json: try printJSON(WriteJSON(key: key, index: index))
            case .table: print("\(key) = index \(index)")
            }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "get",
            abstract: "Print a variable's value.",
            discussion: """
                Table output is the value's bytes exactly, nothing else (a newline is added only when stdout is \
                a terminal), so `$(flotilla var get KEY)` is the value. --output json adds the indexes.
                """)

        @Argument(help: "The key.")
        var key: String

        @Flag(help: "Answer from the connected controller's own state, without the leader (may be behind).")
        var stale = false

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let variable: Flotilla_V1_VariableRecord
            do {
                variable = try await cluster.withClient { try await $0.varGet(key: key, stale: stale) }
            } catch let error as RPCError where error.code == .notFound {
                throw CLIError("no variable named \(key)")
            }
            switch cluster.output {
            case .json:
                try printJSON(VariableJSON(variable))
            case .table:
                FileHandle.standardOutput.write(variable.value)
                if isatty(STDOUT_FILENO) == 1, variable.value.last != UInt8(ascii: "\n") {
                    FileHandle.standardOutput.write(Data("\n".utf8))
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls",
            abstract: "List variables, sorted by key.",
            aliases: ["list"])

        @Argument(help: "Only keys that start with this.")
        var prefix: String = ""

        @Flag(help: "Answer from the connected controller's own state, without the leader (may be behind).")
        var stale = false

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let variables = try await cluster.withClient { try await $0.varList(prefix: prefix, stale: stale) }
            switch cluster.output {
            case .json:
                try printJSON(variables.map(VariableJSON.init))
            case .table:
                var table = TextTable("KEY", "MODIFY INDEX", "SIZE")
                for variable in variables {
                    table.append(variable.key, "\(variable.modifyIndex)", "\(variable.value.count)")
                }
                print(table.render())
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Delete a variable.",
            aliases: ["remove"])

        @Argument(help: "The key.")
        var key: String

        @Option(help: ArgumentHelp("Delete only if the key's modify index is this.", valueName: "index"))
        var cas: UInt64?

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let index: UInt64
            do {
                index = try await cluster.withClient { try await $0.varDelete(key: key, cas: cas) }
            } catch let error as RPCError where error.code == .notFound {
                throw CLIError("no variable named \(key)")
            }
            switch cluster.output {
            case .json: try printJSON(WriteJSON(key: key, index: index))
            case .table: print("\(key) deleted at index \(index)")
            }
        }
    }
}

/// `--output json` of a put or delete.
struct WriteJSON: Encodable {
    let key: String
    let index: UInt64
}

/// `--output json` of one variable: `value` when it is valid UTF-8, else `value_base64`.
struct VariableJSON: Encodable {
    let key: String
    let value: String?
    let valueBase64: String?
    let createIndex: UInt64
    let modifyIndex: UInt64

    enum CodingKeys: String, CodingKey {
        case key, value
        case valueBase64 = "value_base64"
        case createIndex = "create_index"
        case modifyIndex = "modify_index"
    }

    init(_ record: Flotilla_V1_VariableRecord) {
        key = record.key
        let text = String(validating: record.value, as: UTF8.self)
        value = text
        valueBase64 = text == nil ? record.value.base64EncodedString() : nil
        createIndex = record.createIndex
        modifyIndex = record.modifyIndex
    }
}
