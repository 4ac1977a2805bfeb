import ArgumentParser
import CardReader
import CardSession
import MifareClassic
import SmartCard

/// `cardctl value ...`: value-block operations with the reader's native commands.
struct Value: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read and change MIFARE value blocks.",
        discussion: """
            inc/dec/restore use the reader's native commands (ACS FF D7, OMNIKEY FF D4/D8) and transfer the result; \
            a generic Part 3 reader has none and is refused. `transfer SRC DST` is restore from SRC + transfer into DST, \
            as ACS readers combine them; `restore BLOCK` restores and transfers a block onto itself.
            """,
        subcommands: [Get.self, Set.self, Inc.self, Dec.self, Restore.self, Transfer.self]
    )

    /// Runs one value operation on `block` (authenticating its sector) and prints the value afterwards.
    static func perform(
        _ reader: ReaderOptions, _ key: SingleKeyOptions, block: Int, verb: String,
        _ operation: @escaping @Sendable (MifareSession) throws -> Void
    ) async throws {
        try await reportingFailures {
            let connection = try await CardConnection.open(reader)
            try connection.checkBlock(block)
            let (keyType, key) = (key.keyType, key.key)
            let value = try await connection.session { session, _ in
                try session.authenticate(sector: session.size.sector(ofBlock: block), keyType: keyType, key: key)
                try operation(session)
                return try session.readValue(block: block)
            }
            if reader.json {
                try printJSON(ValueReport(block: block, value: Int(value), operation: verb))
            } else {
                print("block \(block): value \(value)")
            }
        }
    }

    struct ValueReport: Encodable {
        var block: Int
        var value: Int
        var operation: String
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a value block's value.")
        @OptionGroup var reader: ReaderOptions
        @OptionGroup var key: SingleKeyOptions
        @Argument(help: "Block number.") var block: BlockNumber
        func run() async throws { try await Value.perform(reader, key, block: block.value, verb: "get") { _ in } }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Format a block as a value block holding VALUE (needs write permission).")
        @OptionGroup var reader: ReaderOptions
        @OptionGroup var key: SingleKeyOptions
        @Argument(help: "Block number.") var block: BlockNumber
        @Argument(help: "Value, a signed 32-bit integer.") var value: Int32
        func run() async throws {
            let (block, value) = (block.value, value)
            try await Value.perform(reader, key, block: block, verb: "set") { try $0.storeValue(block: block, value: value) }
        }
    }

    struct Inc: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Increment a value block and transfer the result.")
        @OptionGroup var reader: ReaderOptions
        @OptionGroup var key: SingleKeyOptions
        @Argument(help: "Block number.") var block: BlockNumber
        @Argument(help: "Amount, 0...2147483647.") var amount: Int32
        func validate() throws { if amount < 0 { throw ValidationError("the amount must not be negative: use `dec` to decrement") } }
        func run() async throws {
            let (block, amount) = (block.value, amount)
            try await Value.perform(reader, key, block: block, verb: "inc") { try $0.increment(block: block, by: amount) }
        }
    }

    struct Dec: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Decrement a value block and transfer the result.")
        @OptionGroup var reader: ReaderOptions
        @OptionGroup var key: SingleKeyOptions
        @Argument(help: "Block number.") var block: BlockNumber
        @Argument(help: "Amount, 0...2147483647.") var amount: Int32
        func validate() throws { if amount < 0 { throw ValidationError("the amount must not be negative: use `inc` to increment") } }
        func run() async throws {
            let (block, amount) = (block.value, amount)
            try await Value.perform(reader, key, block: block, verb: "dec") { try $0.decrement(block: block, by: amount) }
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Restore a value block and transfer it onto itself (a no-op that checks the format).")
        @OptionGroup var reader: ReaderOptions
        @OptionGroup var key: SingleKeyOptions
        @Argument(help: "Block number.") var block: BlockNumber
        func run() async throws {
            let block = block.value
            try await Value.perform(reader, key, block: block, verb: "restore") { try $0.copyValue(from: block, to: block) }
        }
    }

    struct Transfer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Copy value block SOURCE onto DESTINATION in the same sector (restore + transfer).")
        @OptionGroup var reader: ReaderOptions
        @OptionGroup var key: SingleKeyOptions
        @Argument(help: "Source block.") var source: BlockNumber
        @Argument(help: "Destination block, same sector.") var destination: BlockNumber
        func run() async throws {
            let (source, destination) = (source.value, destination.value)
            try await Value.perform(reader, key, block: destination, verb: "transfer") {
                try $0.copyValue(from: source, to: destination)
            }
        }
    }
}
