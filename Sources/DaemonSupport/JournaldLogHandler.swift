import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler for a systemd service: one line per message on stderr, which systemd connects to the journal,
/// starting with the sd-daemon(3) priority prefix so `journalctl -p err` filters it:
///
///     <3>cardd: cannot open the journal database reader.name=ACR122U db.path=/var/lib/onecard/journal.sqlite
///
/// `<2>` critical, `<3>` error, `<4>` warning, `<5>` notice, `<6>` info, `<7>` debug and trace. Metadata follows as
/// `key=value`, keys sorted; a value with spaces, quotes or `=` is quoted. Newlines in the message or a value are
/// written as `\n` so one message stays one journal entry.
///
/// Secrets never reach the journal: a metadata value whose key looks like a key or a secret (see `isSecretKey`) is
/// written as `<redacted>`, whatever its value (house style 9: "secrets never").
public struct JournaldLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    public let label: String
    private let output: Output

    /// The value printed instead of a secret.
    public static let redacted = "<redacted>"

    /// A handler writing to standard error (fd 2).
    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.init(label: label, fileDescriptor: STDERR_FILENO, metadataProvider: metadataProvider)
    }

    /// A handler writing to `fileDescriptor` (tests pass a pipe). The descriptor stays the caller's.
    public init(label: String, fileDescriptor: Int32, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
        output = Output.shared(fileDescriptor)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        output.write(Self.format(level: event.level, label: label, message: event.message.description, metadata: merged))
    }

    /// The line for one message, newline included (internal for tests).
    static func format(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> String {
        var line = "<\(priority(of: level))>\(label): \(escape(message))"
        for key in metadata.keys.sorted() {
            let value = isSecretKey(key) ? redacted : render(metadata[key]!)
            line += " \(key)=\(quoteIfNeeded(escape(value)))"
        }
        return line + "\n"
    }

    /// The syslog priority sd-daemon(3) expects: SD_CRIT 2 … SD_DEBUG 7.
    public static func priority(of level: Logger.Level) -> Int {
        switch level {
        case .critical: 2
        case .error: 3
        case .warning: 4
        case .notice: 5
        case .info: 6
        case .debug, .trace: 7
        }
    }

    /// The redaction rule: a key is secret when any of its parts (split at `.`, `_`, `-` and lower-to-upper case
    /// changes, compared in lower case) is one of `key`, `keys`, `secret`, `password`, `passwd`, `passphrase`, `token`,
    /// `pin`, `credential`, `credentials`, `private`, `seed`, or ends in `key` (`masterkey`, `apikey`). So `card.key`,
    /// `keyA`, `sector.key_b`, `db.password`, `auth-token` are redacted; `card.serial`, `reader.name`, `keyboard` are not.
    /// It errs towards hiding: a MIFARE key, a derivation seed or a MAC key must never be logged, even by mistake.
    public static func isSecretKey(_ key: String) -> Bool {
        let secretWords: Set<String> = [
            "key", "keys", "secret", "secrets", "password", "passwd", "passphrase", "token", "pin", "credential",
            "credentials", "private", "seed",
        ]
        return words(of: key).contains { word in
            secretWords.contains(word) || word.hasSuffix("key")
        }
    }

    /// `sector.keyB_value` → ["sector", "key", "b", "value"].
    static func words(of key: String) -> [String] {
        var words: [String] = []
        var current = ""
        var previousLower = false
        for character in key {
            if character == "." || character == "_" || character == "-" || character == " " {
                if !current.isEmpty { words.append(current.lowercased()) }
                current = ""
                previousLower = false
                continue
            }
            if character.isUppercase && previousLower {
                words.append(current.lowercased())
                current = ""
            }
            current.append(character)
            previousLower = character.isLowercase || character.isNumber
        }
        if !current.isEmpty { words.append(current.lowercased()) }
        return words
    }

    private static func render(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let values): "[" + values.map(render).joined(separator: ",") + "]"
        case .dictionary(let dictionary):
            "{" + dictionary.keys.sorted().map { key in
                "\(key):\(isSecretKey(key) ? redacted : render(dictionary[key]!))"
            }.joined(separator: ",") + "}"
        }
    }

    private static func escape(_ text: String) -> String {
        guard text.contains(where: { $0.isNewline || $0 == "\\" }) else { return text }
        var escaped = ""
        for character in text {
            switch character {
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case "\r\n": escaped += "\\r\\n"
            case "\\": escaped += "\\\\"
            default: escaped.append(character.isNewline ? " " : character)
            }
        }
        return escaped
    }

    private static func quoteIfNeeded(_ value: String) -> String {
        guard value.isEmpty || value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\t" }) else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// One lock per descriptor, so lines from concurrent loggers are written whole, one `write` each.
    final class Output: @unchecked Sendable {
        let fileDescriptor: Int32
        private let lock = NSLock()
        private static let registryLock = NSLock()
        nonisolated(unsafe) private static var registry: [Int32: Output] = [:]

        private init(_ fileDescriptor: Int32) { self.fileDescriptor = fileDescriptor }

        static func shared(_ fileDescriptor: Int32) -> Output {
            registryLock.withLock {
                if let output = registry[fileDescriptor] { return output }
                let output = Output(fileDescriptor)
                registry[fileDescriptor] = output
                return output
            }
        }

        /// Writes the whole line (a failed write is dropped: a logger has nowhere to report it).
        func write(_ line: String) {
            let bytes = Array(line.utf8)
            lock.withLock {
                var offset = 0
                while offset < bytes.count {
                    let count = bytes[offset...].withUnsafeBytes { Glibc.write(fileDescriptor, $0.baseAddress, $0.count) }
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { return }
                    offset += count
                }
            }
        }
    }
}
