import ArgumentParser
import CardReader
import CardSession
import MifareClassic
import SmartCard

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a dump back onto a card, sector by sector, trailer last.",
        discussion: """
            Refuses an image with invalid sector trailers (inconsistent access bits destroy a sector) unless --force. \
            The card's current keys are given with --key/--key-b; each sector's trailer is written last, so the image's \
            keys take effect only after the sector's data is in place. Block 0 is skipped unless --block0 (genuine \
            cards refuse it; clone cards accept it).
            """)

    @OptionGroup var reader: ReaderOptions
    @OptionGroup var keys: KeyOptions
    @Argument(help: "The dump to write (.mfd/.bin raw, or .json).") var file: String
    @Flag(name: .long, help: "Write even if the image has invalid trailers.") var force = false
    @Flag(name: .customLong("block0"), help: "Also write block 0 (only clone cards accept it).") var includeBlock0 = false

    func run() async throws {
        try await reportingFailures {
            let image = try DumpFile.read(file)
            let problems = image.trailerProblems()
            if !problems.isEmpty && !force {
                let first = problems[0]
                throw CLIError(.badInput, "\(file) has \(problems.count) invalid sector trailer(s), first in sector \(first.sector): \(first.error); writing it would lock those sectors for good: fix the image, or add --force")
            }
            let connection = try await CardConnection.open(reader)
            guard connection.size == image.size else {
                throw CLIError(.badInput, "\(file) is a \(image.size) image but the card is a \(connection.size): use an image of the card's size")
            }
            let (keysA, keysB, includeBlock0) = (keys.candidatesA, keys.keysB, includeBlock0)
            let written = try await connection.session { session, reselect in
                let sectorReader = SectorReader(session: session, reselect: reselect, keysA: keysA, keysB: keysB)
                var written = 0
                for sector in 0..<image.size.sectorCount {
                    // Key B writes under most conditions; fall back to key A (transport configuration).
                    let opened = try sectorReader.findKey(sector: sector, type: .b, candidates: keysB).map { (KeyType.b, $0) }
                        ?? sectorReader.findKey(sector: sector, type: .a, candidates: keysA).map { (KeyType.a, $0) }
                    guard let (keyType, key) = opened else {
                        throw CLIError(.wrongKey, "no given key opens sector \(sector): give the card's current keys with --key/--key-b (\(written) blocks already written)")
                    }
                    let first = image.size.firstBlock(ofSector: sector)
                    for block in first..<first + image.size.blocksInSector(sector) {
                        if block == 0 && !includeBlock0 { continue }
                        try session.authenticate(sector: sector, keyType: keyType, key: key)
                        try session.write(block: block, image.block(block))
                        written += 1
                    }
                }
                return written
            }
            if reader.json {
                struct Written: Encodable { var file: String; var blocksWritten: Int }
                try printJSON(Written(file: file, blocksWritten: written))
            } else {
                print("wrote \(written) blocks from \(file)")
            }
        }
    }
}
