import ArgumentParser
import CampusCard

/// `cardctl keystore ...`: the masters campus card keys are derived from.
struct KeystoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keystore",
        abstract: "Create and inspect keystore files (master keys; never printed).",
        subcommands: [Create.self, Export.self, Show.self, Rotate.self])

    /// Parses a comma-separated role list; every keystore needs the terminal and mac roles.
    static func roles(_ list: String) throws -> Set<KeyRole> {
        var chosen: Set<KeyRole> = []
        for name in list.split(separator: ",") {
            guard let role = KeyRole(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw CLIError(.badInput, "unknown role \"\(name)\": use terminal, loader, mac")
            }
            chosen.insert(role)
        }
        guard chosen.contains(.terminal), chosen.contains(.mac) else {
            throw CLIError(.badInput, "every keystore needs the terminal and mac roles")
        }
        return chosen
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a keystore with fresh random masters, mode 0600.",
            discussion: "This is the card office's keystore. A POS or water controller gets its file from it with `cardctl keystore export` (same masters, no loader): a keystore created separately opens no card.")

        @Argument(help: "Where to write it (refuses to overwrite).") var path: String
        @Option(help: "Roles to include, comma-separated: terminal, loader, mac.") var roles = "terminal,loader,mac"

        func run() async throws {
            try await reportingFailures {
                let chosen = try KeystoreCommand.roles(roles)
                let keystore: FileKeystore
                do { keystore = try FileKeystore.create(path: path, roles: chosen) } catch let error as KeystoreError {
                    throw CLIError(.badInput, error.message)
                }
                print("created \(keystore)")
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a terminal's keystore: the same masters as SOURCE (every version), for the chosen roles only, mode 0600.",
            discussion: "Run it at the card office and carry the file to the POS or water controller; the default roles leave out the loader master (key B), which only loading and settlement stations hold.")

        @Argument(help: "The card office's keystore.") var source: String
        @Argument(help: "Where to write the terminal's keystore (refuses to overwrite).") var destination: String
        @Option(help: "Roles to include, comma-separated: terminal, loader, mac.") var roles = "terminal,mac"

        func run() async throws {
            try await reportingFailures {
                let chosen = try KeystoreCommand.roles(roles)
                do { print("exported \(try FileKeystore.export(from: source, to: destination, roles: chosen))") } catch let error as KeystoreError {
                    throw CLIError(.badInput, error.message)
                }
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
