import CampusCard
import CardReader
import CardSession
import Foundation
import Logging
import PCSC
import SmartCard

/// The daemon's reader: one PC/SC context for card sessions, and the card on the reader while it stays there. Every
/// card session of the daemon runs through here, one at a time, on the context's own thread.
actor CardPort {
    private let readerSpec: String?
    private let profile: ReaderKind?
    private let logger: Logger
    private var context: PCSCContext?
    private var connection: CardConnection?
    /// The UID (hex) of the card `connection` holds.
    private(set) var uid: String?
    /// When the session in progress started (for the watchdog: a session that never returns is a hung reader).
    private(set) var sessionStarted: Date?

    init(reader: String?, profile: ReaderKind?, logger: Logger) {
        self.readerSpec = reader
        self.profile = profile
        self.logger = logger
    }

    /// Connects to the card that arrived on `reader` and reads its UID. A failure leaves no connection.
    func attach(reader: String) async throws -> String {
        await detach()
        do {
            return try await connect(reader: reader)
        } catch {
            // The context of a pcscd that was restarted answers SCARD_E_NO_SERVICE for good (CardConnection reports it
            // as "no reader", so it cannot be told apart here): a fresh context, and one more try. Without this the
            // first card after a pcscd restart was lost, and the sale armed for it timed out with the card on the reader.
            await dropContext()
            return try await connect(reader: reader)
        }
    }

    private func connect(reader: String) async throws -> String {
        let context = try await currentContext()
        let connection = try await CardConnection.open(reader: reader, profile: profile, context: context, logger: logger)
        let uid = try await connection.session { session, _ in try session.uid() }
        let hex = uid.map { String(format: "%02X", $0) }.joined()
        self.connection = connection
        self.uid = hex
        return hex
    }

    /// Releases the card (it left, or the daemon stops).
    func detach() async {
        if let connection { try? await connection.card.disconnect(.leave) }
        connection = nil
        uid = nil
    }

    /// Runs campus card operations on the attached card, as one session reported as a value.
    func run<T: Sendable>(uid expected: String, keystore: any Keystore, terminal: Terminal,
                          _ body: @escaping @Sendable (CampusCardOperations, Terminal) throws -> T) async -> OperationReport<T> {
        guard let connection, uid == expected else {
            return OperationReport(error: ReaderSessionError(.noCard, "card \(expected) is no longer on the reader: present it again"))
        }
        sessionStarted = Date()
        defer { sessionStarted = nil }
        return await connection.campusSession(keystore: keystore, terminal: terminal, body)
    }

    /// A cheap PC/SC round trip on the operations' context: does pcscd answer? (The watchdog asks.)
    func probe() async -> Bool {
        guard let context = try? await currentContext() else { return false }
        do {
            _ = try await context.listReaders()
            return true
        } catch {
            await dropContext()
            return false
        }
    }

    /// Ends the PC/SC context and joins its thread (shutdown: no thread may be inside libpcsclite at exit).
    func close() async {
        await detach()
        await dropContext()
    }

    private func currentContext() async throws -> PCSCContext {
        if let context, context.isValid { return context }
        await dropContext()
        let context = try await CardConnection.openContext()
        self.context = context
        return context
    }

    private func dropContext() async {
        connection = nil
        uid = nil
        if let context { await context.shutdown() }
        context = nil
    }

    /// Whether `name` is the reader the config chose (an index or part of a name; nil: the first reader seen).
    nonisolated func isOurs(_ name: String, among readers: [String]) -> Bool {
        (try? CardConnection.chooseReader(readerSpec, among: readers)) == name
    }
}
