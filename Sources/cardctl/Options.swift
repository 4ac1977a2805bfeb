import ArgumentParser
import MifareClassic
import SmartCard

/// Which reader to use and how to talk to it; shared by every command that touches a card.
struct ReaderOptions: ParsableArguments {
    @Option(name: .long, help: "Reader name (or part of it) or index from `cardctl readers`. Default: the only reader with a card, else the first.")
    var reader: String?

    @Option(name: .long, help: "Reader profile: acr122u, acr1252u, omnikey5422 or generic. Default: from the reader name, else probed.")
    var profile: ReaderKind?

    @Flag(name: .long, help: "Print data as JSON.")
    var json = false
}

/// Keys given on the command line. Never echoed back.
struct KeyOptions: ParsableArguments {
    @Option(name: .customLong("key"), help: "Key A as 12 hex digits (repeat for several; the transport key FFFFFFFFFFFF is always tried last).")
    var keysA: [MifareKey] = []

    @Option(name: .customLong("key-b"), help: "Key B as 12 hex digits (repeat for several).")
    var keysB: [MifareKey] = []

    /// Key A candidates: the given keys, then the transport key (factory sectors need no --key).
    var candidatesA: [MifareKey] { keysA.contains(.transport) ? keysA : keysA + [.transport] }
}

extension ReaderKind: ExpressibleByArgument {}

extension MifareKey: ExpressibleByArgument {
    public init?(argument: String) { self.init(hex: argument) }
    public var defaultValueDescription: String { "<redacted>" }
}

/// A block number: decimal, or hex with 0x; checked against the card size later.
struct BlockNumber: ExpressibleByArgument {
    let value: Int
    init?(argument: String) {
        let parsed = argument.lowercased().hasPrefix("0x") ? Int(argument.dropFirst(2), radix: 16) : Int(argument)
        guard let parsed, parsed >= 0, parsed < 256 else { return nil }
        value = parsed
    }
}
