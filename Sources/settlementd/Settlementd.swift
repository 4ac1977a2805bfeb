import ArgumentParser
import BuildInfo
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SettlementCore
import SettlementServer

/// `settlementd`: the settlement service (docs/settlement-api.yaml, docs/settlement.md).
@main
struct Settlementd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settlementd",
        abstract: "The OneCard settlement service: terminals upload, pull blacklist and parameters, run online loads; the card office administers.",
        discussion: """
            Listens on loopback by default; put a TLS reverse proxy in front of it (docs/settlement.md, "TLS"). \
            Stops gracefully on SIGTERM or SIGINT. Exit status: 0 stopped cleanly, 1 failed at run time, \
            69 the store or the address is unavailable (PostgreSQL down, the port in use), 70 the store cannot be \
            opened, 78 the configuration is wrong (the message says which).
            """,
        version: BuildInfo.versionLine
    )

    @Option(help: "The SQLite database (created when missing). The default store.") var db: String?
    @Option(help: "A PostgreSQL URL (postgres://USER@HOST:PORT/DB) instead of SQLite.") var postgres: String?
    @Option(help: "With --postgres: seconds one database request may take, waiting for a connection included, before it fails (503; at start: exit 69).")
    var requestTimeout = 30
    @Option(help: "HOST:PORT to listen on (port 0: any free port; the chosen one is printed).") var listen = "127.0.0.1:8780"
    @Option(help: "The admin clients' secrets, one NAME:HEX line each; must be open to its owner only (0600).") var adminKeyFile: String
    @Option(help: "Connections served at once; more are closed at once (keep it under the process's open-file limit).")
    var maxConnections = ServerLimits().maxConnections
    @Option(help: "Seconds before a connection with nothing in flight is closed (over 60: clients keep idle connections 60 s).")
    var idleTimeout = 75

    func validate() throws {
        if db != nil, postgres != nil { throw ValidationError("give --db PATH or --postgres URL, not both") }
        if db == nil, postgres == nil { throw ValidationError("give --db PATH (SQLite) or --postgres URL") }
        if !(1...600).contains(requestTimeout) { throw ValidationError("--request-timeout must be 1–600 seconds") }
        _ = try ListenAddress(listen)
        if !(1...1_000_000).contains(maxConnections) { throw ValidationError("--max-connections must be 1–1000000") }
        if !(5...3600).contains(idleTimeout) { throw ValidationError("--idle-timeout must be 5–3600 seconds") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["ONECARD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
        let logger = Logger(label: "settlementd")
        let address = try ListenAddress(listen)
        let admins: AdminCredentials
        do { admins = try AdminCredentials(contentsOf: adminKeyFile) } catch {
            printError("settlementd: --admin-key-file: \(error)")
            throw ExitCode(78)
        }
        let opened: OpenedStore
        do {
            opened = try await OpenedStore.open(db: db, postgres: postgres, requestTimeout: .seconds(requestTimeout), logger: logger)
        } catch {
            printError("settlementd: \(error)")
            throw ExitCode(70)
        }
        let limits = ServerLimits(maxConnections: maxConnections, idleTimeout: .seconds(Int64(idleTimeout)))
        let server = SettlementServer(store: opened.store, admins: admins, limits: limits)
        let app = server.application(host: address.host, port: address.port, logger: logger, services: opened.services,
                                     prepare: opened.prepare, onServerRunning: { port in
            // One line on stdout for scripts that started us on port 0.
            FileHandle.standardOutput.write(Data("settlementd \(BuildInfo.version) listening on \(address.host):\(port) (\(opened.description))\n".utf8))
        })
        do {
            try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        } catch let error as SettlementError {
            // The store failed before the server took requests (PostgreSQL unreachable, a migration refused).
            printError("settlementd: \(opened.description): \(error.message)")
            throw ExitCode(error.code == .unavailable ? 69 : 70)
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            printError("settlementd: --listen \(listen): the address is in use (another settlementd, or another service): stop it or listen on another port")
            throw ExitCode(69)
        } catch let error as IOError where [EADDRNOTAVAIL, EACCES].contains(error.errnoCode) {
            printError("settlementd: --listen \(listen): \(error.errnoCode == EACCES ? "ports under 1024 need root" : "no interface of this machine has that address"): listen on another address or port")
            throw ExitCode(78)
        }
    }
}

/// `HOST:PORT` or `[IPv6]:PORT`.
struct ListenAddress {
    var host: String
    var port: Int

    init(_ text: String) throws {
        let message = "--listen \(text) is not HOST:PORT (e.g. 127.0.0.1:8780, [::1]:8780; port 0–65535)"
        guard let colon = text.lastIndex(of: ":") else { throw ValidationError(message) }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
            throw ValidationError(message)
        }
        self.host = host
        self.port = port
    }
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
