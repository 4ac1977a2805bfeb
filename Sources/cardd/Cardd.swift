import ArgumentParser
import BuildInfo
import CampusCard
import CardDaemon
import CardSession
import DaemonSupport
import Foundation
import Logging
import PCSC
import TerminalStore

/// `cardd`: the terminal daemon (systemd service). See README "The terminal daemon" and docs/control-api.md.
@main
struct Cardd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cardd",
        abstract: "The campus card terminal daemon: POS, water controller, settlement station or load station.",
        discussion: """
            Exit status: 0 stopped cleanly, 1 failed at run time, 70 the terminal store is corrupt or unusable, \
            78 the configuration is wrong (the message names the key).
            """,
        version: BuildInfo.versionLine
    )

    @Option(help: "The configuration file (default: $ONECARD_CONFIG, else \(DaemonConfig.defaultPath)).") var config: String?
    @Flag(help: "Check the configuration, the keystore and the store, print what would run, and exit.") var checkConfig = false

    static func main() async {
        await mainReleasingPCSC()
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = JournaldLogHandler(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["ONECARD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
        let logger = Logger(label: "cardd")
        let config = self.config ?? ProcessInfo.processInfo.environment["ONECARD_CONFIG"] ?? DaemonConfig.defaultPath
        let settings: DaemonConfig
        do { settings = try DaemonConfig.load(path: config) } catch {
            printError("cardd: configuration \(config): \(error)")
            throw ExitCode(78)
        }
        let keystore: FileKeystore
        do { keystore = try FileKeystore(path: settings.keystorePath) } catch {
            printError("cardd: keystore \(settings.keystorePath): \(error)")
            throw ExitCode(78)
        }
        // A settlement station writes the water wallet's settlement with key B: without the loader master it would
        // refuse every card at run time (missing-key); refuse the keystore now, naming the key.
        if [.settle, .load].contains(settings.mode), !keystore.roles(version: keystore.currentVersion).contains(.loader) {
            printError("cardd: configuration \(config): keystore: \(settings.keystorePath) holds no loader master, which a \(settings.mode == .load ? "load station (mode load)" : "settlement station (mode settle)") needs: export it with `cardctl keystore export OFFICE DEST --roles terminal,loader,mac`")
            throw ExitCode(78)
        }
        // Probably typos: a setting a variable was meant to change is not changed.
        for name in DaemonConfig.unrecognisedEnvironment(ProcessInfo.processInfo.environment) {
            printError("cardd: warning: the environment variable \(name) names no setting and is ignored (a typo? see docs/cardd-config.md)")
        }
        // The loader master credits any card: a POS or water controller needs none, and a stolen box should not hold it.
        if [.pos, .water].contains(settings.mode), keystore.roles(version: keystore.currentVersion).contains(.loader) {
            printError("cardd: warning: keystore \(settings.keystorePath) holds the loader master, which a \(settings.mode.rawValue) terminal never uses: whoever takes the box can load cards with it; give it a terminal keystore (`cardctl keystore export OFFICE DEST`, roles terminal and mac)")
        }
        if checkConfig {
            // A check changes nothing: a store not there yet is not created, only its place checked.
            let storeNote: String
            if FileManager.default.fileExists(atPath: settings.storePath) {
                do { try TerminalStore(path: settings.storePath, options: .init(createIfMissing: false)).close() } catch {
                    printError("cardd: \(error)")
                    throw ExitCode(70)
                }
                storeNote = "store \(settings.storePath)"
            } else {
                var directory = (settings.storePath as NSString).deletingLastPathComponent
                while !directory.isEmpty, directory != "/", !FileManager.default.fileExists(atPath: directory) {
                    directory = (directory as NSString).deletingLastPathComponent
                }
                guard access(directory.isEmpty ? "." : directory, W_OK) == 0 else {
                    printError("cardd: configuration \(config): store.path: cannot create the terminal store \(settings.storePath): \(directory) is not writable by this user; create the directory for the daemon's user, or choose another path")
                    throw ExitCode(78)
                }
                storeNote = "store \(settings.storePath) (new: created when cardd starts)"
            }
            do { try ControlSocketServer.Configuration(path: settings.controlSocketPath, group: settings.controlSocketGroup).check() } catch {
                printError("cardd: configuration \(config): control: \(error.message)")
                throw ExitCode(78)
            }
            // The socket's directory: systemd makes /run/onecard (RuntimeDirectory=) only as the unit starts.
            let socketDirectory = (settings.controlSocketPath as NSString).deletingLastPathComponent
            if socketDirectory != "/run/onecard", !FileManager.default.fileExists(atPath: socketDirectory) {
                printError("cardd: configuration \(config): control.socket: the directory \(socketDirectory) does not exist: create it, or keep the default /run/onecard/cardd.sock (the unit makes /run/onecard)")
                throw ExitCode(78)
            }
            var uplinkNote = "no uplink (offline only)"
            if let uplink = settings.uplink {
                do { _ = try Uplink.readSecret(uplink.secretFile) } catch {
                    printError("cardd: configuration \(config): \(error)")
                    throw ExitCode(78)
                }
                uplinkNote = "uplink \(uplink.url) (secret \(uplink.secretFile))"
            }
            if settings.mode == .water, settings.water.backend == .gpio, let gpio = settings.water.gpio,
               !FileManager.default.fileExists(atPath: gpio.chip) {
                printError("cardd: configuration \(config): water.gpio.chip: \(gpio.chip) does not exist on this machine: see `ls /dev/gpiochip*` (and udev/60-onecard-gpio.rules)")
                throw ExitCode(78)
            }
            print("cardd \(BuildInfo.versionLine): terminal \(settings.terminalID), mode \(settings.mode.rawValue), \(storeNote), keystore \(settings.keystorePath) (version \(keystore.currentVersion)), control socket \(settings.controlSocketPath), \(uplinkNote)")
            return
        }
        // One daemon per store: two sharing it (and so its reader and terminal id) fight over every tap. The lock is
        // the kernel's, held until this process ends, however it ends.
        let lock = open(settings.storePath + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if lock >= 0, flock(lock, LOCK_EX | LOCK_NB) != 0 {
            var holder = [UInt8](repeating: 0, count: 32)
            let count = pread(lock, &holder, holder.count, 0)
            let pid = count > 0 ? String(decoding: holder[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            printError("cardd: configuration \(config): store.path: another cardd (pid \(pid)) runs on \(settings.storePath): give each daemon its own store, reader and terminal id")
            throw ExitCode(78)
        }
        if lock >= 0 {
            let pid = Array("\(getpid())\n".utf8)
            _ = ftruncate(lock, 0)
            _ = pwrite(lock, pid, pid.count, 0)
        }
        let store: TerminalStore
        do { store = try TerminalStore(path: settings.storePath) } catch {
            printError("cardd: \(error)")
            throw ExitCode(70)
        }
        let runtime = try Runtime(config: settings, store: store, keystore: keystore, logger: logger)
        try await runtime.run()
    }
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
