import ArgumentParser
import CardReader
import CardSession
import Foundation
import MifareClassic
import PCSC
import SmartCard

struct Readers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the PC/SC readers and the card on each.")

    @Flag(name: .long, help: "Print as JSON.") var json = false

    struct Entry: Encodable {
        var index: Int
        var name: String
        var profile: String?
        var card: String?
        var atr: String?
    }

    func run() async throws {
        try await reportingFailures {
            let context = try await CardConnection.openContext()
            let states = try await context.readerStates()
            let entries = states.enumerated().map { index, state in
                Entry(
                    index: index, name: state.name,
                    profile: ReaderProfile.matching(readerName: state.name)?.kind.rawValue,
                    card: state.atr.map { ATR(bytes: $0).cardName.description },
                    atr: state.atr.map { Hex.encode($0, separator: " ") })
            }
            if json {
                try printJSON(entries)
            } else if entries.isEmpty {
                print("no readers (is the reader plugged in? is pcscd running?)")
            } else {
                for entry in entries {
                    let card = entry.card.map { "card: \($0)" } ?? "no card"
                    let profile = entry.profile.map { "profile \($0)" } ?? "profile: probe on connect"
                    print("\(entry.index): \(entry.name)  [\(card); \(profile)]")
                }
            }
        }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Decode the card's ATR and UID and name the reader profile.")

    @OptionGroup var reader: ReaderOptions

    struct Report: Encodable {
        var reader: String
        var readerVendor: String?
        var profile: String
        var profileSource: String
        var nativeValueOperations: Bool
        var keySlots: Int
        var keysVolatile: Bool
        var atr: String
        var atrChecksumValid: Bool
        var card: String
        var uid: String
        var uidLength: Int
    }

    func run() async throws {
        try await reportingFailures {
            let connection = try await CardConnection.open(reader)
            let uid = try await connection.session { session, _ in try session.uid() }
            // Not every driver reports a vendor (vpcd does not): optional.
            let vendor = (try? await connection.card.attribute(.vendorName)).map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let profile = connection.profile
            let report = Report(
                reader: connection.readerName, readerVendor: vendor, profile: profile.kind.rawValue, profileSource: connection.profileSource,
                nativeValueOperations: profile.hasNativeValueOperations, keySlots: profile.keySlots,
                keysVolatile: profile.keysAreVolatile, atr: connection.atr.description,
                atrChecksumValid: connection.atr.checksumIsValid, card: connection.atr.cardName.description,
                uid: Hex.encode(uid), uidLength: uid.count)
            if reader.json {
                try printJSON(report)
            } else {
                print("reader    \(report.reader)\(vendor.map { " (vendor \($0))" } ?? "")")
                print("profile   \(profile.kind.rawValue) — \(profile.name), chosen by \(report.profileSource)")
                print("          value operations: \(profile.hasNativeValueOperations ? "native (\(profile.valueCommands.rawValue))" : "none (read/write only)"); key slots: \(profile.keySlots) \(profile.keysAreVolatile ? "volatile" : "non-volatile")")
                print("ATR       \(report.atr)\(report.atrChecksumValid ? "" : "  (checksum INVALID)")")
                print("card      \(report.card)")
                print("UID       \(report.uid) (\(uid.count) bytes)")
            }
        }
    }
}

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print reader and card events as they happen, until Ctrl-C.",
        discussion: "Survives pcscd restarts and readers being unplugged; prints each as an event.")

    @Flag(name: .long, help: "One JSON object per line.") var json = false

    func run() async throws {
        try await reportingFailures {
            let monitor = ReaderMonitor()
            let json = json
            let task = Task {
                for try await event in monitor.events() {
                    let stamp = ISO8601DateFormatter().string(from: Date())
                    if json {
                        let encoder = JSONEncoder()
                        encoder.outputFormatting = [.sortedKeys]
                        let line = ["time": stamp, "event": event.kind, "reader": event.reader ?? "", "atr": event.atr.map { Hex.encode($0) } ?? ""]
                        print(String(decoding: try encoder.encode(line), as: UTF8.self))
                    } else {
                        print("\(stamp)  \(event)")
                    }
                    FileHandle.standardOutput.synchronizeFile()
                }
            }
            let interrupt = InterruptSignal.install { task.cancel() }
            defer { interrupt.cancel() }
            do {
                try await task.value
            } catch is CancellationError {
                // Ctrl-C: a clean exit.
            }
        }
    }
}

/// Ctrl-C / SIGTERM as a callback instead of process death, so async work can wind down.
final class InterruptSignal: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]

    private init(sources: [any DispatchSourceSignal]) { self.sources = sources }

    static func install(_ handler: @escaping @Sendable () -> Void) -> InterruptSignal {
        let sources = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
        return InterruptSignal(sources: sources)
    }

    func cancel() { sources.forEach { $0.cancel() } }
}
