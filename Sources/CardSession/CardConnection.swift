import Foundation
import CampusCard
import CardReader
import Logging
import MifareClassic
import PCSC
import SmartCard

/// Why a card session could not start: a code and one line (what, why, what to do).
public struct ReaderSessionError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// pcscd does not answer, or there is no such reader.
        case noReader = "no-reader"
        /// The reader has no card (or it left during setup).
        case noCard = "no-card"
        /// The card is not a MIFARE Classic 1K/4K.
        case unsupportedCard = "unsupported-card"
        /// The reader choice or a block number given is not usable as given.
        case badInput = "bad-input"
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}

/// A card on a chosen reader, with the profile that fits the reader, ready for card sessions. Shared by `cardctl`
/// and `cardd`: choosing a reader, ATR → card size, the profile (given, from the reader's name, or probed), and the
/// re-select a MIFARE Classic card needs after a failed authentication.
public struct CardConnection: Sendable {
    public let context: PCSCContext
    public let card: PCSCCard
    public let readerName: String
    public let atr: ATR
    public let size: CardSize
    public let profile: ReaderProfile
    /// How the profile was chosen: "--profile", "reader name", or "firmware probe (ACR122U215)".
    public let profileSource: String

    /// Picks the reader (`reader`: an index or part of a name; else the first), connects, identifies the card and
    /// the profile (`profile` forces one). Opens a context of its own when none is given.
    public static func open(reader: String?, profile kind: ReaderKind? = nil, context given: PCSCContext? = nil,
                            logger: Logger = Logger(label: "onecard.session")) async throws -> CardConnection {
        let context: PCSCContext
        if let given { context = given } else { context = try await openContext() }
        let readers: [String]
        do { readers = try await context.listReaders() } catch let error as PCSCError {
            throw ReaderSessionError(.noReader, "cannot list readers (\(error.name)): is pcscd running? (`systemctl status pcscd`)")
        }
        let name = try chooseReader(reader, among: readers)
        let card: PCSCCard
        do {
            card = try await context.connect(reader: name)
        } catch let error as PCSCError where error.transportFailure == .cardRemoved {
            throw ReaderSessionError(.noCard, "no card on \"\(name)\": put a card on the reader and retry (\(error.name))")
        }
        // Select the card afresh: a card halted by an earlier program's failed authentication or refused command
        // answers nothing until it is selected again.
        try await card.reconnect(initialization: .reset)
        let atr = ATR(bytes: card.atr)
        let size: CardSize
        switch atr.cardName {
        case .mifareClassic1K: size = .classic1K
        case .mifareClassic4K: size = .classic4K
        case let other:
            throw ReaderSessionError(.unsupportedCard, "the card on \"\(name)\" is a \(other), not a MIFARE Classic 1K/4K: only MIFARE Classic campus cards are read")
        }
        var profile: ReaderProfile
        var source: String
        if let kind {
            (profile, source) = (ReaderProfile.profile(for: kind), "--profile")
        } else if let byName = ReaderProfile.matching(readerName: name) {
            (profile, source) = (byName, "reader name")
        } else {
            let probed = try await card.perform { channel in try ReaderProfile.probe(channel) }
            profile = probed.profile
            source = probed.firmware.map { "firmware probe (\($0))" } ?? "firmware probe (no ACS answer)"
        }
        logger.debug("card session", metadata: ["reader": "\(name)", "profile": "\(profile.name)", "profileSource": "\(source)", "size": "\(size)"])
        return CardConnection(context: context, card: card, readerName: name, atr: atr, size: size, profile: profile, profileSource: source)
    }

    /// Refuses a block number the card does not have.
    public func checkBlock(_ block: Int) throws {
        guard size.contains(block: block) else {
            throw ReaderSessionError(.badInput, "block \(block) does not exist on a \(size): use 0...\(size.blockCount - 1)")
        }
    }

    /// Runs one card session on the PC/SC context's own thread. `reselect` resets the card (SCardReconnect with
    /// SCARD_RESET_CARD), which a MIFARE Classic card needs after a failed authentication.
    public func session<T: Sendable>(_ body: @escaping @Sendable (MifareSession, _ reselect: @escaping @Sendable () throws -> Void) throws -> T) async throws -> T {
        let (profile, size) = (profile, size)
        return try await card.perform { channel in
            let session = MifareSession(channel: channel, profile: profile, size: size)
            return try body(session) { try channel.reconnect(initialization: .reset) }
        }
    }

    /// Runs campus card operations in one card session and reports, as a value, what happened: the operation's
    /// result or error, its money's outcome, and the earlier interrupted operations of `terminal` it decided.
    /// Never throws: a session that could not run is a report with its error and no intents.
    public func campusSession<T: Sendable>(keystore: any Keystore, terminal: Terminal,
                                           _ body: @escaping @Sendable (CampusCardOperations, Terminal) throws -> T) async -> OperationReport<T> {
        do {
            return try await session { session, reselect in
                let operations = CampusCardOperations(session: session, keystore: keystore, reselect: reselect)
                return terminal.perform { terminal in try body(operations, terminal) }
            }
        } catch {
            return OperationReport(value: nil, error: error, intents: [], decided: [])
        }
    }

    /// Opens a PC/SC context; pcscd not answering is a `noReader` refusal.
    public static func openContext() async throws -> PCSCContext {
        do {
            return try await PCSCContext.establish()
        } catch let error as PCSCError {
            throw ReaderSessionError(.noReader, "cannot reach pcscd (\(error.name)): start it (`systemctl start pcscd`, or `pcscd -f` in a container) and retry")
        }
    }

    /// Resolves a reader choice: an index from `cardctl readers`, or a case-insensitive part of the name matching one
    /// reader; `nil` takes the first.
    public static func chooseReader(_ spec: String?, among readers: [String]) throws -> String {
        guard !readers.isEmpty else {
            throw ReaderSessionError(.noReader, "no PC/SC reader found: plug the reader in (an ACR122U also needs the pn533 modules blacklisted, see HardwareNotes.md), or start the emulator (scripts/demo)")
        }
        guard let spec else { return readers[0] }
        if let index = Int(spec) {
            guard readers.indices.contains(index) else {
                throw ReaderSessionError(.noReader, "there is no reader \(index): `cardctl readers` lists \(readers.count) (0...\(readers.count - 1))")
            }
            return readers[index]
        }
        let matches = readers.filter { $0.localizedCaseInsensitiveContains(spec) }
        switch matches.count {
        case 1: return matches[0]
        case 0: throw ReaderSessionError(.noReader, "no reader's name contains \"\(spec)\": see `cardctl readers`")
        default: throw ReaderSessionError(.badInput, "\"\(spec)\" matches \(matches.count) readers (\(matches.joined(separator: "; "))): give more of the name or an index")
        }
    }
}
