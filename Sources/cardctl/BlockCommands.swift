import ArgumentParser
import CardReader
import CardSession
import Foundation
import MifareClassic
import SmartCard

/// The key to use for a single-sector command: key B when one was given with --key-b and --use-b, else key A.
struct SingleKeyOptions: ParsableArguments {
    @OptionGroup var keys: KeyOptions

    @Flag(name: .customLong("use-b"), help: "Authenticate with key B (from --key-b) instead of key A.")
    var useKeyB = false

    func validate() throws {
        if useKeyB && keys.keysB.isEmpty { throw ValidationError("--use-b needs the key: give --key-b HEX") }
    }

    var keyType: KeyType { useKeyB ? .b : .a }
    var key: MifareKey { useKeyB ? keys.keysB[0] : keys.candidatesA[0] }
}

struct ReadBlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "read", abstract: "Read one block.")

    @OptionGroup var reader: ReaderOptions
    @OptionGroup var key: SingleKeyOptions
    @Argument(help: "Block number (decimal or 0x hex).") var block: BlockNumber

    func run() async throws {
        try await reportingFailures {
            let connection = try await CardConnection.open(reader)
            try connection.checkBlock(block.value)
            let (keyType, key, block) = (key.keyType, key.key, block.value)
            let data = try await connection.session { session, _ in
                try session.authenticate(sector: session.size.sector(ofBlock: block), keyType: keyType, key: key)
                return try session.read(block: block)
            }
            // Key bytes of a trailer (key B where the access bits make it readable) are never printed, as in `dump`.
            let trailer = CardSize.classic4K.isTrailer(block)
            if reader.json {
                try printJSON(["block": "\(block)", "data": maskedHex(data, maskKeys: trailer)])
            } else {
                print(hexLine(block: block, bytes: data, maskKeys: trailer))
            }
        }
    }
}

struct WriteBlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "write", abstract: "Write one block (refuses a sector trailer with inconsistent access bits).")

    @OptionGroup var reader: ReaderOptions
    @OptionGroup var key: SingleKeyOptions
    @Argument(help: "Block number (decimal or 0x hex).") var block: BlockNumber
    @Argument(help: "16 bytes as 32 hex digits.") var hex: String

    @Flag(name: .long, help: "Write block 0 or a trailer even though it can brick the sector or card.")
    var force = false

    func run() async throws {
        try await reportingFailures {
            guard let data = Hex.decode(hex), data.count == 16 else {
                throw CLIError(.badInput, "\"\(hex)\" is not 16 bytes of hex: give exactly 32 hex digits (spaces allowed)")
            }
            let connection = try await CardConnection.open(reader)
            let (keyType, key, block, force) = (key.keyType, key.key, block.value, force)
            try await connection.session { session, _ in
                let size = session.size
                guard size.contains(block: block) else {
                    throw CLIError(.badInput, "block \(block) does not exist on a \(size): use 0...\(size.blockCount - 1)")
                }
                if size.isTrailer(block) {
                    do { _ = try SectorTrailer(block: data) } catch {
                        throw CLIError(.badInput, "refusing to write block \(block): \(error)")
                    }
                    if !force {
                        throw CLIError(.badInput, "block \(block) is a sector trailer: writing wrong keys locks the sector for good; check it, then add --force")
                    }
                }
                if block == 0 && !force {
                    throw CLIError(.badInput, "block 0 holds the UID and manufacturer data (read-only on genuine cards): add --force to try anyway")
                }
                try session.authenticate(sector: size.sector(ofBlock: block), keyType: keyType, key: key)
                try session.write(block: block, data)
            }
            print("wrote block \(block)")
        }
    }
}
