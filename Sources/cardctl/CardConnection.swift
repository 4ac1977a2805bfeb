import CardReader
import MifareClassic
import PCSC
import SmartCard

/// A card on a chosen reader, with the profile that fits the reader, ready for one session.
struct CardConnection {
    let context: PCSCContext
    let card: PCSCCard
    let readerName: String
    let atr: ATR
    let size: CardSize
    let profile: ReaderProfile
    /// How the profile was chosen: "--profile", "reader name", or "firmware probe (ACR122U215)".
    let profileSource: String

    /// Picks the reader (by --reader, else the first with a card), connects, identifies the card and the profile.
    static func open(_ options: ReaderOptions) async throws -> CardConnection {
        let context = try await openContext()
        let readers = try await context.listReaders()
        let name = try chooseReader(options.reader, among: readers)
        let card: PCSCCard
        do {
            card = try await context.connect(reader: name)
        } catch let error as PCSCError where error.transportFailure == .cardRemoved {
            throw CLIError(.noCard, "no card on \"\(name)\": put a card on the reader and retry (\(error.name))")
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
            throw CLIError(.badInput, "the card on \"\(name)\" is a \(other), not a MIFARE Classic 1K/4K: cardctl reads only MIFARE Classic cards")
        }
        var profile: ReaderProfile
        var source: String
        if let kind = options.profile {
            (profile, source) = (ReaderProfile.profile(for: kind), "--profile")
        } else if let byName = ReaderProfile.matching(readerName: name) {
            (profile, source) = (byName, "reader name")
        } else {
            let probed = try await card.perform { channel in try ReaderProfile.probe(channel) }
            profile = probed.profile
            source = probed.firmware.map { "firmware probe (\($0))" } ?? "firmware probe (no ACS answer)"
        }
        return CardConnection(context: context, card: card, readerName: name, atr: atr, size: size, profile: profile, profileSource: source)
    }

    /// Refuses a block number the card does not have.
    func checkBlock(_ block: Int) throws {
        guard size.contains(block: block) else {
            throw CLIError(.badInput, "block \(block) does not exist on a \(size): use 0...\(size.blockCount - 1)")
        }
    }

    /// Runs one card session on the PC/SC context's own thread. `reselect` resets the card (SCardReconnect with
    /// SCARD_RESET_CARD), which a MIFARE Classic card needs after a failed authentication.
    func session<T: Sendable>(_ body: @escaping @Sendable (MifareSession, _ reselect: @escaping @Sendable () throws -> Void) throws -> T) async throws -> T {
        let (profile, size) = (profile, size)
        return try await card.perform { channel in
            let session = MifareSession(channel: channel, profile: profile, size: size)
            return try body(session) { try channel.reconnect(initialization: .reset) }
        }
    }

    static func openContext() async throws -> PCSCContext {
        do {
            return try await PCSCContext.establish()
        } catch let error as PCSCError {
            throw CLIError(.noReader, "cannot reach pcscd (\(error.name)): start it (`systemctl start pcscd`, or `pcscd -f` in a container) and retry")
        }
    }

    /// Resolves --reader: an index from `cardctl readers`, or a case-insensitive part of the name matching one reader.
    static func chooseReader(_ spec: String?, among readers: [String]) throws -> String {
        guard !readers.isEmpty else {
            throw CLIError(.noReader, "no PC/SC reader found: plug the reader in (an ACR122U also needs the pn533 modules blacklisted, see HardwareNotes.md), or start the emulator (scripts/demo)")
        }
        guard let spec else { return readers[0] }
        if let index = Int(spec) {
            guard readers.indices.contains(index) else {
                throw CLIError(.noReader, "there is no reader \(index): `cardctl readers` lists \(readers.count) (0...\(readers.count - 1))")
            }
            return readers[index]
        }
        let matches = readers.filter { $0.localizedCaseInsensitiveContains(spec) }
        switch matches.count {
        case 1: return matches[0]
        case 0: throw CLIError(.noReader, "no reader's name contains \"\(spec)\": see `cardctl readers`")
        default: throw CLIError(.badInput, "\"\(spec)\" matches \(matches.count) readers (\(matches.joined(separator: "; "))): give more of the name or an index")
        }
    }
}
