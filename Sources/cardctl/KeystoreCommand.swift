import ArgumentParser
import CampusCard

/// `cardctl keystore ...`: the masters campus card keys are derived from.
struct KeystoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keystore",
        abstract: "Create and inspect keystore files (master keys; never printed).",
        subcommands: [Create.self, Show.self, Rotate.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a keystore with fresh random masters, mode 0600.",
            discussion: "A POS or water controller gets --roles terminal,mac; only loading and settlement stations hold the loader master.")

        @Argument(help: "Where to write it (refuses to overwrite).") var path: String
        @Option(help: "Roles to include, comma-separated: terminal, loader, mac.") var roles = "terminal,loader,mac"

        func run() async throws {
            try await reportingFailures {
                var chosen: Set<KeyRole> = []
                for name in roles.split(separator: ",") {
                    guard let role = KeyRole(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                        throw CLIError(.badInput, "unknown role \"\(name)\": use terminal, loader, mac")
                    }
                    chosen.insert(role)
                }
                guard chosen.contains(.terminal), chosen.contains(.mac) else {
                    throw CLIError(.badInput, "every keystore needs the terminal and mac roles")
                }
                let keystore: FileKeystore
                do { keystore = try FileKeystore.create(path: path, roles: chosen) } catch let error as KeystoreError {
                    throw CLIError(.badInput, error.message)
                }
                print("created \(keystore)")
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a new key version with fresh masters and make it current (then `cardctl card rekey` each card).")
        @Argument(help: "The keystore file.") var path: String

        func run() async throws {
            try await reportingFailures {
                do { print("rotated \(try FileKeystore.rotate(path: path))") } catch let error as KeystoreError {
                    throw CLIError(.badInput, error.message)
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a keystore and list its versions and roles (no key material).")
        @Argument(help: "The keystore file.") var path: String

        func run() async throws {
            try await reportingFailures {
                do { print(try FileKeystore(path: path)) } catch let error as KeystoreError {
                    throw CLIError(.badInput, error.message)
                }
            }
        }
    }
}
