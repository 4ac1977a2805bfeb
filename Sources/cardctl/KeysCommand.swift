import ArgumentParser
import CardReader
import CardSession
import MifareClassic
import SmartCard

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Find which keys open the card's sectors.", subcommands: [Try.self])

    /// Publicly known default keys (MIFARE Classic Tool's and libnfc's standard dictionaries). Not secrets.
    static let wellKnown: [(name: String, key: MifareKey)] = [
        ("FFFFFFFFFFFF (transport)", "FFFFFFFFFFFF"),
        ("A0A1A2A3A4A5 (MAD key A)", "A0A1A2A3A4A5"),
        ("B0B1B2B3B4B5 (MAD key B example)", "B0B1B2B3B4B5"),
        ("D3F7D3F7D3F7 (NFC Forum)", "D3F7D3F7D3F7"),
        ("000000000000", "000000000000"),
        ("AABBCCDDEEFF", "AABBCCDDEEFF"),
        ("4D3A99C351DD", "4D3A99C351DD"),
        ("1A982C7E459A", "1A982C7E459A"),
        ("714C5C886E97", "714C5C886E97"),
        ("587EE5F9350F", "587EE5F9350F"),
        ("A0478CC39091", "A0478CC39091"),
        ("533CB6C723F6", "533CB6C723F6"),
        ("8FD0A4F256E9", "8FD0A4F256E9"),
    ].map { ($0.0, MifareKey(hex: $0.1)!) }

    struct Try: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Try a dictionary of well-known keys (and any --key/--key-b) on every sector.",
            discussion: "Keys you give are reported by position (\"--key #1\"), never printed; well-known keys by value.")

        @OptionGroup var reader: ReaderOptions
        @OptionGroup var keys: KeyOptions

        struct Finding: Encodable {
            var sector: Int
            var keyA: String?
            var keyB: String?
        }

        func run() async throws {
            try await reportingFailures {
                let connection = try await CardConnection.open(reader)
                let candidatesA = keys.keysA.enumerated().map { ("--key #\($0.offset + 1)", $0.element) } + Keys.wellKnown
                let candidatesB = keys.keysB.enumerated().map { ("--key-b #\($0.offset + 1)", $0.element) } + Keys.wellKnown
                let findings = try await connection.session { session, reselect in
                    let sectorReader = SectorReader(session: session, reselect: reselect, keysA: [], keysB: [])
                    return try (0..<session.size.sectorCount).map { sector in
                        let a = try sectorReader.findKey(sector: sector, type: .a, candidates: candidatesA.map(\.1))
                        let b = try sectorReader.findKey(sector: sector, type: .b, candidates: candidatesB.map(\.1))
                        return Finding(
                            sector: sector,
                            keyA: a.flatMap { key in candidatesA.first { $0.1 == key }?.0 },
                            keyB: b.flatMap { key in candidatesB.first { $0.1 == key }?.0 })
                    }
                }
                if reader.json {
                    try printJSON(findings)
                } else {
                    print("sector  key A                            key B")
                    for finding in findings {
                        print(String(finding.sector).leftPadded(to: 6) + "  " + (finding.keyA ?? "-").rightPadded(to: 33) + (finding.keyB ?? "-"))
                    }
                    let open = findings.filter { $0.keyA != nil || $0.keyB != nil }.count
                    print("\(open) of \(findings.count) sectors open with a known key")
                }
            }
        }
    }
}
