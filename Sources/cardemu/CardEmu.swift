import ArgumentParser
import BuildInfo
import CardEmulator
import Foundation
import MifareClassic
import SmartCard

extension ReaderKind: ExpressibleByArgument {}

@main
struct CardEmu: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cardemu",
        abstract: "Emulate a contactless reader and a MIFARE Classic card behind pcscd's vpcd virtual reader.",
        version: BuildInfo.versionLine,
        subcommands: [Serve.self, Ctl.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Present the card until stopped (the default command).",
        discussion: """
            Port 35963 is pcscd's "Virtual PCD 00 00", 35964 "Virtual PCD 00 01" (Debian vsmartcard-vpcd). \
            With --save every change of the card's memory is written back to FILE (atomically, within 0.1 s, and at exit).
            """)

    @Option(help: "vpcd TCP port on 127.0.0.1.") var port: UInt16 = 35963
    @Option(help: "Reader firmware to emulate: acr122u, acr1252u, omnikey5422, generic.") var profile: ReaderKind = .acr122u
    @Option(help: "Card image: a 1024/4096-byte raw dump (.mfd).") var card: String?
    @Flag(help: "Block 0 writable, like a clone card.") var magic = false
    @Flag(help: "Write changes back to the --card file.") var save = false
    @Option(help: "Unix socket path for `cardemu ctl`.") var control: String?
    @Option(help: "Per-APDU latency in milliseconds (a real ACR122U takes tens).") var latency = 0

    func validate() throws {
        if save && card == nil { throw ValidationError("--save needs --card FILE to write to") }
    }

    func run() throws {
        let reader = EmulatedReader(kind: profile)
        reader.latency = latency
        let saver = CardSaver(path: save ? card : nil)
        if let path = card {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw fail("cannot read \(path): no such file or not readable; give a raw MIFARE Classic dump")
            }
            do {
                let emulated = try EmulatedCard(image: Array(data), magic: magic)
                reader.insert(emulated)
                saver.track(emulated, path: save ? path : nil)
            } catch {
                throw fail("\(path): \(error)")
            }
        }
        var server: ControlServer?
        if let control {
            let controlServer = ControlServer(path: control, reader: reader) { card, file in saver.track(card, path: save ? file : nil) }
            do { try controlServer.start() } catch { throw fail("\(error)") }
            server = controlServer
        }
        let link = VPCDLink(reader: reader, port: port)
        link.start()
        if reader.currentCard != nil && !link.waitUntilConnected(timeout: .seconds(5)) {
            printError("cardemu: warning: cannot connect to vpcd on 127.0.0.1:\(port) yet (is pcscd running with vsmartcard-vpcd? scripts/bootstrap); still trying")
        }
        let banner = "cardemu: \(profile) on port \(port)\(card.map { ", card \($0)" } ?? ", no card")\(control.map { ", control \($0)" } ?? "")\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
        saver.start(reader: reader)

        // Wait for SIGINT/SIGTERM, then shut down cleanly.
        let done = DispatchSemaphore(value: 0)
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { done.signal() }
            source.resume()
            sources.append(source)
        }
        done.wait()
        reader.remove()
        link.stop()
        server?.stop()
        saver.saveNow()
        sources.forEach { $0.cancel() }
    }
}

/// Writes the card's memory back to its file after changes (for --save).
final class CardSaver: @unchecked Sendable {
    private let lock = NSLock()
    private var card: EmulatedCard?
    private var path: String?
    private var saved: [UInt8] = []

    init(path: String?) { self.path = path }

    func track(_ card: EmulatedCard, path: String?) {
        lock.withLock {
            self.card = card
            self.path = path
            saved = card.memory
        }
    }

    func start(reader: EmulatedReader) {
        let thread = Thread { [self] in
            while true {
                Thread.sleep(forTimeInterval: 0.1)
                saveNow()
            }
        }
        thread.start()
    }

    func saveNow() {
        lock.withLock {
            guard let card, let path, card.memory != saved else { return }
            let memory = card.memory
            let temporary = path + ".tmp-\(getpid())"
            if FileManager.default.createFile(atPath: temporary, contents: Data(memory)), rename(temporary, path) == 0 {
                saved = memory
            } else {
                printError("cardemu: cannot save the card to \(path): \(String(cString: strerror(errno))); changes stay in memory")
            }
        }
    }
}

struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Control a running cardemu: insert FILE|remove|tear-after N|tear-during N --effect E|latency MS|unresponsive on|off|status.")

    @Option(help: "The control socket of the running cardemu.") var control: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String] = []

    func validate() throws {
        if command.isEmpty { throw ValidationError("give a command: insert FILE, remove, tear-after N, tear-during N, latency MS, unresponsive on|off, status") }
    }

    func run() throws {
        var words = command
        // Make a relative FILE absolute: the emulator may run in another directory.
        if words.first == "insert", words.count > 1, !words[1].hasPrefix("/") {
            words[1] = FileManager.default.currentDirectoryPath + "/" + words[1]
        }
        let answer: String
        do { answer = try ControlClient.send(words.joined(separator: " "), to: control) } catch { throw fail("\(error)") }
        if answer.hasPrefix("ok") {
            print(answer.dropFirst(answer.hasPrefix("ok ") ? 3 : 2))
        } else {
            throw fail(answer.hasPrefix("error: ") ? String(answer.dropFirst(7)) : answer)
        }
    }
}

func printError(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

/// Prints one line and exits 1.
func fail(_ message: String) -> ExitCode {
    printError("cardemu: \(message)")
    return ExitCode(1)
}
