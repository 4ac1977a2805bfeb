import CampusCard
import Foundation

/// The settlement service's storage: one protocol, two implementations (SQLite through GRDB for one site,
/// PostgreSQL through postgres-nio at scale), one conformance suite (Tests/SettlementStoreTests) run against both.
///
/// Every method is one transaction: it either happens whole or not at all (a rejected call writes nothing). The
/// ledger rules live in one place (`Ledger`, pure values) and both stores apply them; the stores only load the state
/// the rules need and write what the rules decide. The service keeps no state of its own: two instances on one
/// PostgreSQL database keep the uniqueness and counter rules.
public protocol SettlementStore: Sendable {
    // MARK: terminals
    /// Registers or replaces a terminal.
    func putTerminal(_ terminal: TerminalInfo) async throws
    /// Registers a new terminal; refused (`conflict`) when its id is registered already, in the same statement (two
    /// registrations at once cannot both be told a secret).
    func addTerminal(_ terminal: TerminalInfo) async throws
    func terminal(_ id: TerminalID) async throws -> TerminalInfo?
    /// Sets a terminal's state and role (`nil`: unchanged) in one statement, and answers the terminal as it then is
    /// (`nil`: no such terminal). Two changes at once cannot undo each other, as a read and a whole-row write could.
    func changeTerminal(_ id: TerminalID, enabled: Bool?, loads: Bool?) async throws -> TerminalInfo?
    /// Records a request nonce; `false` when it was already seen inside the replay window (a replay).
    func rememberNonce(terminal: TerminalID, nonce: String, at date: Date) async throws -> Bool

    // MARK: ingest
    /// Stores and books an uploaded batch, idempotent on (terminal, sequence); one acknowledgement per record, in the
    /// batch's order. Records must come from `terminal` (else the whole batch is refused, nothing written).
    func ingest(_ records: [TerminalRecord], from terminal: TerminalID, at date: Date) async throws -> [RecordAck]

    // MARK: accounts and cards (admin)
    func openAccount(name: String, initialBalance: Fen, at date: Date) async throws -> Account
    func account(_ id: Int64) async throws -> Account?
    /// Issues a card to an account. Refused when the serial or the UID is already issued.
    func issueCard(serial: UInt32, uid: String, accountID: Int64, at date: Date) async throws -> Card
    func card(serial: UInt32) async throws -> Card?
    func card(uid: String) async throws -> Card?
    /// Changes a card's status (lost, found = active, frozen, cancelled) and appends the blacklist row the terminals
    /// pull. Returns the card and the blacklist version of the change.
    func setCardStatus(serial: UInt32, to status: CardStatus, reason: String, at date: Date) async throws -> (Card, Int64)

    // MARK: feeds to terminals
    func blacklist(after version: Int64, limit: Int) async throws -> BlacklistPage
    func parameters(for terminal: TerminalID) async throws -> TerminalParameters
    func setParameters(_ parameters: TerminalParameters, for terminal: TerminalID?) async throws -> TerminalParameters

    // MARK: online load (圈存)
    /// Prepares a load: holds `amount` from the card's account. Idempotent on `reference` (the same prepare returns
    /// the same state; a different one with the same reference is refused).
    func prepareLoad(reference: String, terminal: TerminalID, cardSerial: UInt32, amount: Fen, balanceBefore: Fen,
                     counterBefore: UInt16, at date: Date) async throws -> LoadState
    /// The card carries the load: books it. Idempotent; refused after a reversal. A card balance other than the
    /// prepared balance plus the amount is refused (`conflict`) and disputes the load: it commits the phase
    /// `disputed` and one `load-mismatch` flag, the hold stays in `pending-load`, and a later confirmation or reversal
    /// is refused without writing.
    func confirmLoad(reference: String, balanceAfter: Fen, counterAfter: UInt16, at date: Date) async throws -> LoadState
    /// The card write failed: releases the hold. Idempotent; refused after a confirmation or a dispute.
    func reverseLoad(reference: String, at date: Date) async throws -> LoadState
    /// The card office settles a disputed load after reading the card (`reason` says what it found). `credited`: the
    /// card carries the load, booked as a confirmation at the figures the disputed one showed (the hold goes to the
    /// purse, or to `suspense` where the load's own uploaded record booked it from there); not `credited`: the hold
    /// goes back to the holder's account, refused when the load's own record was uploaded as done (the card's own
    /// record says it carries the money). One `load-settled` flag records the decision. Idempotent: a load already
    /// standing as decided is answered as it is; refused for a load that is not disputed and was not settled so.
    func settleDisputedLoad(reference: String, credited: Bool, reason: String, at date: Date) async throws -> LoadState
    /// Which of `references` name an online load (in any phase), in one query: an upload settles only those, and a
    /// batch with office loads costs no per-record lookup.
    func loadReferences(among references: [String]) async throws -> Set<String>

    // MARK: reports and operators
    func dailyTotals(day: String) async throws -> [DailyTotal]
    func statement(cardSerial: UInt32) async throws -> [LedgerEntry]
    func flags(limit: Int) async throws -> [OperatorFlag]
    /// The sum of every ledger entry: zero, always (double entry). For checks and tests.
    func ledgerImbalance() async throws -> Fen
    /// Rows per table (the store's own table names): the conformance suite checks that a rejected call wrote nothing.
    func rowCounts() async throws -> [String: Int]
}

/// What a store's load transaction decided: the load as it now stands, or a refusal to throw once the transaction
/// has committed what it must keep (a dispute's flag is written even though the confirmation is refused).
public enum LoadOutcome: Sendable {
    case done(LoadState)
    case refused(SettlementError)
}
