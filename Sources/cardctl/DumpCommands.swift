import ArgumentParser
import CardReader
import CardSession
import Foundation
import MifareClassic
import SmartCard

enum DumpFormat: String, ExpressibleByArgument, CaseIterable {
    /// Raw memory in block order, keys in the trailers (Proxmark3, libnfc, MIFARE Classic Tool).
    case mfd
    /// JSON with hex blocks and decoded access conditions.
    case json
}

struct Dump: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read every sector the given keys open.",
        discussion: """
            Trailers in the file carry the keys that opened them (the card reads key A back as zeros), as other dump \
            tools do. Keys are masked on the terminal. An incomplete dump is still written, and the exit status is 5 \
            unless --allow-partial.
            """)

    @OptionGroup var reader: ReaderOptions
    @OptionGroup var keys: KeyOptions
    @Option(name: .long, help: "Write the dump to FILE.") var out: String?
    @Option(name: .long, help: "File format: mfd (raw, default) or json.") var format: DumpFormat = .mfd
    @Flag(name: .long, help: "Exit 0 even when some sectors could not be read.") var allowPartial = false

    func run() async throws {
        try await reportingFailures {
            // Before the card is read: a destination refused after the tap would waste it.
            if let out { try DumpFile.checkDestination(out) }
            let connection = try await CardConnection.open(reader)
            let (keysA, keysB) = (keys.candidatesA, keys.keysB)
            let sectors = try await connection.session { session, reselect in
                let sectorReader = SectorReader(session: session, reselect: reselect, keysA: keysA, keysB: keysB)
                return try (0..<session.size.sectorCount).map { try sectorReader.read(sector: $0) }
            }
            let image = try CardImage(sectors: sectors, size: connection.size)
            if let out {
                let bytes: [UInt8]
                switch format {
                case .mfd: bytes = image.mfd
                case .json: bytes = try DumpFile.json(image, keysMasked: false)
                }
                try DumpFile.write(bytes, to: out)
            }
            if reader.json {
                print(String(decoding: try DumpFile.json(image, keysMasked: true), as: UTF8.self))
            } else {
                printTable(sectors, size: connection.size)
                if let out { print("wrote \(out) (\(format.rawValue), \(image.mfd.count) bytes)") }
            }
            let unread = sectors.filter { !$0.isComplete }
            if !unread.isEmpty {
                let list = unread.map { String($0.sector) }.joined(separator: ",")
                printError("cardctl: warning: \(unread.count) sector(s) not fully read (\(list)): give their keys with --key/--key-b, or find them with `cardctl keys try`")
                if !allowPartial { throw ExitCode(CLIError.Status.refused.rawValue) }
            }
        }
    }

    private func printTable(_ sectors: [SectorContents], size: CardSize) {
        for sector in sectors {
            let opened = [sector.keyA != nil ? "key A" : nil, sector.keyB != nil ? "key B" : nil].compactMap { $0 }
            print("sector \(sector.sector)  (opened with \(opened.isEmpty ? "no key" : opened.joined(separator: ", ")))")
            let first = size.firstBlock(ofSector: sector.sector)
            let trailer = sector.blocks.last ?? nil
            let access = trailer.flatMap { try? AccessBits(bytes: Array($0[6..<9])) }
            for (index, block) in sector.blocks.enumerated() {
                let number = first + index
                var note = ""
                if size.isTrailer(number), block != nil {
                    note = access.map { "trailer: " + $0.describeGroup(3) } ?? "trailer: INVALID access bits"
                } else if let access {
                    note = access.describeGroup(size.accessGroup(ofBlock: number))
                    if let block, let value = try? ValueBlock(block: block) { note += "; value \(value.value)" }
                }
                // Keys never reach the terminal.
                print(hexLine(block: number, bytes: block, note: note, maskKeys: size.isTrailer(number)))
            }
            if let problem = sector.problem { print("      ! \(problem)") }
        }
    }
}

extension CardImage {
    /// Assembles a dump from what the sectors gave up: unreadable blocks are zeros, trailers carry the opening keys.
    init(sectors: [SectorContents], size: CardSize) throws {
        var bytes = [UInt8](repeating: 0, count: size.byteCount)
        for sector in sectors {
            let first = size.firstBlock(ofSector: sector.sector)
            for (index, block) in sector.blocks.enumerated() {
                let number = first + index
                let data = size.isTrailer(number) ? sector.trailerForDump : block
                if let data { bytes.replaceSubrange(number * 16..<number * 16 + 16, with: data) }
            }
        }
        try self.init(mfd: bytes)
    }
}

/// Reading and writing dump files.
enum DumpFile {
    /// The JSON dump; `keysMasked` (for the screen) shows every key byte as "••", as `read` does: not zeros, which
    /// are a real key, and a masked dump cannot be restored by mistake (its trailers are not hex).
    static func json(_ image: CardImage, keysMasked: Bool) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let bytes = Array(try encoder.encode(image))
        guard keysMasked else { return bytes }
        guard var object = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
              var blocks = object["blocks"] as? [String], var sectors = object["sectors"] as? [[String: Any]],
              blocks.count == image.size.blockCount, sectors.count == image.size.sectorCount else {
            throw CLIError(.failed, "the dump's JSON came out in an unexpected shape: report this as a bug")
        }
        let maskedKey = String(repeating: "••", count: 6)
        for sector in 0..<image.size.sectorCount {
            let trailer = image.size.trailerBlock(ofSector: sector)
            blocks[trailer] = maskedKey + Hex.encode(Array(image.block(trailer)[6..<10])) + maskedKey
            sectors[sector]["keyA"] = maskedKey
            sectors[sector]["keyB"] = maskedKey
        }
        object["blocks"] = blocks
        object["sectors"] = sectors
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]))
    }

    /// A dump holds the card's keys: it goes to a new file or replaces a plain one, never through a symlink, a device
    /// or a pipe (`--out /dev/stdout` had replaced the machine's /dev/stdout with a file of keys) nor to the screen.
    static func checkDestination(_ path: String) throws {
        if path == "-" {
            throw CLIError(.badInput, "a dump holds the card's keys, so it is never written to the screen: give --out a file path")
        }
        var status = stat()
        guard lstat(path, &status) == 0 else { return }  // a new file
        let kind: String? = switch status.st_mode & S_IFMT {
        case S_IFREG: nil
        case S_IFLNK: "a symbolic link"
        case S_IFDIR: "a directory"
        case S_IFCHR, S_IFBLK: "a device"
        case S_IFIFO: "a pipe"
        default: "not a plain file"
        }
        if let kind {
            throw CLIError(.badInput, "\(path) is \(kind): a dump holds the card's keys and is written to a plain file only; choose another --out")
        }
    }

    /// Writes atomically (temp file + rename), mode 0600: a dump holds the card's keys.
    static func write(_ bytes: [UInt8], to path: String) throws {
        try checkDestination(path)
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        guard FileManager.default.createFile(atPath: temporary.path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw CLIError(.badInput, "cannot write \(path): the directory is missing or not writable; choose another --out")
        }
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw CLIError(.badInput, "cannot write \(path): \(reason); choose another --out")
        }
    }

    /// One line for a JSON decoding failure: where in the file and what (the error's own description is a dump of
    /// its coding path and context).
    static func describe(_ error: DecodingError) -> String {
        func field(_ context: DecodingError.Context, _ key: (any CodingKey)? = nil) -> String {
            let path = (context.codingPath + (key.map { [$0] } ?? [])).map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return path.isEmpty ? "the top level" : String(path.drop { $0 == "." })
        }
        switch error {
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            let detail: String = context.underlyingError.map { String(describing: $0) } ?? ""
            return "it is not JSON" + (detail.isEmpty || detail.contains("\n") || detail.count > 120 ? "" : " (\(detail))")
        case .dataCorrupted(let context):
            return "\(field(context)): \(context.debugDescription)"
        case .keyNotFound(let key, let context):
            return "\(field(context, key)) is missing"
        case .valueNotFound(_, let context):
            return "\(field(context)) is null"
        case .typeMismatch(let type, let context):
            let expected = "\(type)".hasPrefix("Array") ? "a list of strings" : type == String.self ? "a string" : "a \(type)"
            return "\(field(context)) is not \(expected)"
        @unknown default:
            return "\(error.localizedDescription)"
        }
    }

    /// Reads an .mfd/.bin (raw) or .json dump.
    static func read(_ path: String) throws -> CardImage {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CLIError(.badInput, "cannot read \(path): no such file or not readable")
        }
        if path.lowercased().hasSuffix(".json") {
            do { return try JSONDecoder().decode(CardImage.self, from: data) } catch let error as DecodingError {
                throw CLIError(.badInput, "\(path) is not a valid JSON dump: \(describe(error)); give a dump written by `cardctl dump --format json`, or a raw .mfd")
            } catch {
                throw CLIError(.badInput, "\(path) is not a valid JSON dump: \(error); give a dump written by `cardctl dump --format json`, or a raw .mfd")
            }
        }
        do { return try CardImage(mfd: Array(data)) } catch {
            throw CLIError(.badInput, "\(path) is not a MIFARE Classic dump: \(error)")
        }
    }
}
