import Foundation

/// A throwaway PostgreSQL 15 cluster on loopback (scripts/postgres), started by the tests and stopped when the test
/// process ends (its watchdog), never the machine's own. `shared` is one cluster per test process; tests that restart
/// or kill the server start a private one with `start()`. Each test takes a fresh database with `createDatabase()`.
///
/// No PostgreSQL here is a failure, not a skip: scripts/bootstrap installs Debian's postgresql-15 (CI runs it).
public final class PostgresServer: Sendable {
    /// The cluster's directory (data, socket, log).
    public let directory: String
    /// `postgres://onecard:PASSWORD@127.0.0.1:PORT/postgres`.
    public let url: String

    private static let script = SampleCards.repositoryRoot.appendingPathComponent("scripts/postgres").path
    private static let sharedResult: Result<PostgresServer, TestSetupError> = Result { try PostgresServer.start() }
        .mapError { $0 as? TestSetupError ?? TestSetupError("\($0)") }

    /// The test process's cluster, started on first use.
    public static func shared() throws -> PostgresServer { try sharedResult.get() }

    /// Starts a private cluster (initdb + start: a few seconds), stopped by `stop()` or when the process exits.
    public static func start() throws -> PostgresServer {
        // The server runs as `postgres` when we are root: its directory's parents need the search bit.
        let parent = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("onecard-pg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o711])
        let directory = parent.appendingPathComponent("cluster").path
        let result = run(script, ["start", directory, "--until-exit", String(getpid())], timeout: 120)
        guard result.status == 0 else {
            throw TestSetupError("scripts/postgres start failed (exit \(result.status)): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)); run scripts/bootstrap to install postgresql-15")
        }
        return PostgresServer(directory: directory, url: result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private init(directory: String, url: String) {
        self.directory = directory
        self.url = url
    }

    /// Creates an empty database and returns its URL.
    public func createDatabase(prefix: String = "t") throws -> String {
        let name = "\(prefix)_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased())"
        try psql("CREATE DATABASE \(name)")
        return url.replacingOccurrences(of: "/postgres", with: "/\(name)", options: .backwards)
    }

    /// Runs SQL through psql against the `postgres` database (or `database`); returns its unaligned output.
    @discardableResult
    public func psql(_ sql: String, database: String? = nil) throws -> String {
        var target = url
        if let database { target = url.replacingOccurrences(of: "/postgres", with: "/\(database)", options: .backwards) }
        let result = run("/usr/bin/psql", [target, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        guard result.status == 0 else {
            throw TestSetupError("psql failed (exit \(result.status)) on \(sql.prefix(80)): \(result.stderr)")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Stops and starts the server on the same port: `fast` disconnects clients cleanly, `immediate` is a crash (WAL
    /// recovery at start).
    public func restart(immediate: Bool = false) throws {
        try control(["restart", directory, immediate ? "immediate" : "fast"])
    }

    /// SIGKILL to the postmaster; `startAgain()` brings it back on the same port.
    public func kill() throws { try control(["kill", directory]) }

    public func startAgain() throws { try control(["start", directory]) }

    public func stop() throws { try control(["stop", directory]) }

    private func control(_ arguments: [String]) throws {
        let result = run(Self.script, arguments, timeout: 120)
        guard result.status == 0 else {
            throw TestSetupError("scripts/postgres \(arguments[0]) failed (exit \(result.status)): \(result.stderr)")
        }
    }
}
