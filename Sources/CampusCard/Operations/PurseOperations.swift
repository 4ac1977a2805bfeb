import CardReader
import Crypto
import Foundation
import MifareClassic

/// The terminal doing an operation: its id and its journal. The debit limits are the holder's, on the card
/// (`HolderLimits`), not the terminal's.
public struct Terminal: Sendable {
    public var id: TerminalID
    public var journal: any TerminalJournal
    /// The highest counter this terminal has seen per card (UID hex): a lower one is a replayed card state.
    public var lastSeenCounter: @Sendable (String) -> UInt16?

    public init(id: TerminalID, journal: any TerminalJournal, lastSeenCounter: @escaping @Sendable (String) -> UInt16? = { _ in nil }) {
        self.id = id
        self.journal = journal
        self.lastSeenCounter = lastSeenCounter
    }
}

/// What a read found and what it repaired.
public struct PurseState: Sendable, Hashable {
    public enum Resolution: String, Sendable, Hashable {
        /// Record, primary and backup agree.
        case consistent
        /// A committed operation's backup copy was missing: the backup was repaired (the operation is done).
        case backupRepaired = "backup-repaired"
        /// An operation was interrupted before its commit: the primary was restored (the operation is not done).
        case rolledBack = "rolled-back"
        /// The record itself was torn: rolled back and the record rebuilt from the log (not done).
        case recordRebuilt = "record-rebuilt"
    }
    public var uid: [UInt8]
    public var balance: Fen
    public var record: PurseRecord
    public var resolution: Resolution
    /// The key version whose MAC key vouches for this card's records (fixed at issue; re-keying changes sector keys only).
    public var macVersion: UInt8 = 1
    /// The card's log ring (layout v1 or v2), named by the purse value blocks' address byte.
    public var logRing: LogRing = .v1
    /// An operation that returned this state is done; these say what failed after its commit (see `writeTearSafely`).
    public var warnings: [String] = []
    /// The record block as read, when it vouched for the balance (a terminal's witness of the state before its write).
    var recordBlock: [UInt8]?
}

/// Campus card operations over one MIFARE session (one card session, one authentication per sector touched).
public struct CampusCardOperations {
    public let session: MifareSession
    public let keystore: any Keystore
    public let now: Date

    public static let purseSector = 2
    public static let record = 8, primary = 9, backup = 10

    /// Selects the card again after a failed authentication (a halted card answers nothing): with it, sectors are
    /// tried with every key version the keystore knows, newest first; without it, only the current version.
    public let reselect: (@Sendable () throws -> Void)?

    public init(session: MifareSession, keystore: any Keystore, now: Date = Date(), reselect: (@Sendable () throws -> Void)? = nil) {
        self.session = session
        self.keystore = keystore
        self.now = now
        self.reselect = reselect
    }

    /// Versions to try, `preferred` first, then the other known ones newest first.
    func versions(preferring preferred: UInt8) -> [UInt8] {
        [preferred] + keystore.knownVersions.sorted(by: >).filter { $0 != preferred }
    }

    // MARK: Read and resolve

    /// Reads the purse, decides any interrupted operation (done / not done) and repairs the card to match.
    /// Key A only: works at every terminal.
    ///
    /// A torn record is put back from the record `terminal`'s journal verified before its own torn write (its open
    /// intents' `recordBefore`) or from `witnesses` (the card office's records), when one vouches for a value on the
    /// card; else rebuilt from the log.
    public func readPurse(version: UInt8? = nil, terminal: Terminal? = nil, witnesses: [[UInt8]] = []) throws -> PurseState {
        let uid = try session.uid()
        let version = version ?? keystore.currentVersion
        do {
            try authenticate(sector: Self.purseSector, role: .terminal, uid: uid, version: version)
        } catch let error as MifareError where error.code == .authenticationFailed {
            throw CardOperationError(.notCampusCard, "the card's purse does not open with this keystore's keys (version \(version)): not a campus card, issued by another system, or a key version this keystore lacks")
        }
        let values = try readValueSector(.purse)
        let ring = try Self.logRing(values)
        // The MAC version is the card's (fixed at issue): the one under which the record vouches for either value.
        let macVersion = try self.macVersion(uid: uid) { key in
            [values.primary, values.backup].contains { $0.map { PurseRecord.vouches(values.record, for: Fen(Int($0)), uid: uid, macKey: key) } ?? false }
        } ?? version
        let macKey = try keystore.macKey(uid: uid, version: macVersion)
        let vouches = { (value: Int32) in PurseRecord.vouches(values.record, for: Fen(Int(value)), uid: uid, macKey: macKey) }
        if let primary = values.primary, vouches(primary), values.backup != primary, session.canCopyValue,
           let record = try? PurseRecord(block: values.record) {
            // The backup lags a committed operation: its log entry may be missing. Back-fill it before the backup is
            // repaired — once repaired, nothing shows the lag any more (a reader that cannot repair writes nothing:
            // it refuses below). Best effort: a card that leaves now fails the operation that follows anyway.
            try? backfillLogEntry(uid: uid, record: record, after: Fen(Int(primary)), macVersion: macVersion, version: version, ring: ring)
            try authenticate(sector: Self.purseSector, role: .terminal, uid: uid, version: version)
        }
        switch try resolveValueSector(.purse, values, vouches: vouches) {
        case .agreed(let balance, let resolution):
            let record = try PurseRecord(block: values.record)
            return PurseState(uid: uid, balance: Fen(Int(balance)), record: record, resolution: resolution, macVersion: macVersion,
                              logRing: ring, recordBlock: values.record)
        case .recordTorn(let backup):
            let uidHex = uid.map { String(format: "%02X", $0) }.joined()
            let own = try terminal?.journal.openIntents(cardUID: uidHex).reversed().filter(\.isPurse).compactMap(\.recordBeforeBytes) ?? []
            // A reader that cannot copy a value block could not finish the repair: it writes nothing (refused below).
            for witness in session.canCopyValue ? own + witnesses : [] {
                for macVersion in keystore.knownVersions.sorted(by: >) where keystore.roles(version: macVersion).contains(.mac) {
                    let key = try keystore.macKey(uid: uid, version: macVersion)
                    let vouched = [values.primary, values.backup].contains { $0.map { PurseRecord.vouches(witness, for: Fen(Int($0)), uid: uid, macKey: key) } ?? false }
                    guard vouched, let counter = try? PurseRecord(block: witness).counter else { continue }
                    // A record older than the log's newest entry is a past state, not the one before the torn write.
                    if let newest = try newestLogEntry(uid: uid, macKey: key, version: version, ring: ring), newest.counter &- counter < 0x8000,
                       newest.counter != counter { continue }
                    try authenticate(sector: Self.purseSector, role: .terminal, uid: uid, version: version)
                    try session.write(block: Self.record, witness)
                    let restored = ValueSectorContents(record: witness, primary: values.primary, backup: values.backup)
                    guard case .agreed(let balance, _) = try resolveValueSector(.purse, restored, vouches: {
                        PurseRecord.vouches(witness, for: Fen(Int($0)), uid: uid, macKey: key)
                    }) else { continue }
                    return PurseState(uid: uid, balance: Fen(Int(balance)), record: try PurseRecord(block: witness), resolution: .rolledBack,
                                      macVersion: macVersion, logRing: ring, recordBlock: witness)
                }
            }
            return try rebuildPurseRecord(uid: uid, backup: backup, version: version, ring: ring)
        }
    }

    /// Writes the log entry for the record's own counter when it is missing and the entry before it vouches for the
    /// balance before (see `backfillLogEntry`): the card office reads the log anyway.
    func fillLogGap(_ state: PurseState) throws {
        try backfillLogEntry(uid: state.uid, record: state.record, after: state.balance, macVersion: state.macVersion,
                             version: keystore.currentVersion, ring: state.logRing)
    }

    /// A backup that lags the committed primary means the operation's finish never ran, so its log entry was never
    /// written: write it now, naming the terminal and sequence the record names, so the interrupted terminal can still
    /// decide from the log once the card has moved on (tearing rule 6), and a later torn record can be rebuilt. The
    /// balance before comes from the MAC'd entry for the counter before (the backup may be garbled), the amount is the
    /// difference, in the direction the operation moves money; only for operations that move money.
    private func backfillLogEntry(uid: [UInt8], record: PurseRecord, after: Fen, macVersion: UInt8, version: UInt8, ring: LogRing) throws {
        let macKey = try keystore.macKey(uid: uid, version: macVersion)
        let entries = try readLog(uid: uid, macKey: macKey, version: version, ring: ring, around: [record.counter &- 1, record.counter])
        guard !entries.contains(where: { $0.counter == record.counter }),
              let before = entries.first(where: { $0.counter == record.counter &- 1 })?.balanceAfter else { return }
        let change = after.rawValue - before.rawValue
        switch record.lastOperation {
        case .debit: guard change < 0 else { return }
        case .load, .subsidy: guard change > 0 else { return }
        case .issue, .repair, .statusChange: return
        }
        let amount = Fen(abs(change))
        guard amount <= LogEntry.maximumAmount else { return }
        try writeLog(LogEntry(operation: record.lastOperation, amount: amount, balanceAfter: after, counter: record.counter,
                              terminal: TerminalTag(terminalID: record.terminalID, sequenceByte: record.terminalSequence)),
                     uid: uid, macKey: macKey, ring: ring)
    }

    /// The record vouches for neither value: a torn record write, or a card altered without the MAC key.
    /// Rebuild only from a MAC'd log entry that vouches for the backup (the state before the torn commit).
    private func rebuildPurseRecord(uid: [UInt8], backup: Int32?, version: UInt8, ring: LogRing) throws -> PurseState {
        var found: (entry: LogEntry, macVersion: UInt8)?
        for macVersion in keystore.knownVersions.sorted(by: >) where found == nil && keystore.roles(version: macVersion).contains(.mac) {
            if let entry = try newestLogEntry(uid: uid, macKey: keystore.macKey(uid: uid, version: macVersion), version: version, ring: ring) {
                found = (entry, macVersion)
            }
        }
        guard let backup, let (entry, macVersion) = found, entry.balanceAfter == Fen(Int(backup)) else {
            throw CardOperationError(.tampered, "the purse record vouches for no balance on the card: the card was altered without the MAC key (or damaged); no debit, keep the card and report it")
        }
        // The status and expiry copies went with the record: take them from the identity (frozen if that is unreadable).
        let identity = try? readIdentity(repairing: false)  // the repair reads the purse: no recursion
        try authenticate(sector: Self.purseSector, role: .terminal, uid: uid, version: version)
        try repairCopy(from: Self.backup, to: Self.primary)
        // Today's total went with the record and the log has no days: unknown, so the daily limit asks for the PIN
        // for the rest of the day (else tearing a debit at its record write would reset the limit).
        // The wrong-PIN counter went too: one try left (HolderLimits.swift); the lowered-limits bit from the identity.
        let rebuilt = PurseRecord(counter: entry.counter, status: identity?.status ?? .frozen, lastOperation: .repair, lastDay: CardDay(now),
                                  debitedToday: PurseRecord.unknownDebitedToday, expires: identity?.expires ?? CardDay(now), terminalID: 0,
                                  terminalSequence: 0, wrongPINTries: PINTries.afterRebuild,
                                  holderLimitsLowered: identity?.holder.effectiveLimits.lowered ?? true)
        let macKey = try keystore.macKey(uid: uid, version: macVersion)
        try session.write(block: Self.record, rebuilt.encode(uid: uid, balance: entry.balanceAfter, macKey: macKey))
        return PurseState(uid: uid, balance: entry.balanceAfter, record: rebuilt, resolution: .recordRebuilt, macVersion: macVersion,
                          logRing: ring)
    }

    /// The log entry with the highest counter that passes its MAC, in the card's ring (`PurseState.logRing`).
    public func newestLogEntry(uid: [UInt8], macKey: SymmetricKey, version: UInt8, ring: LogRing) throws -> LogEntry? {
        try readLog(uid: uid, macKey: macKey, version: version, ring: ring).max { $0.counter < $1.counter }
    }

    /// The newest log entry, in the ring the card's purse value blocks name (read here: sector 2 is authenticated).
    public func newestLogEntry(uid: [UInt8], macKey: SymmetricKey, version: UInt8) throws -> LogEntry? {
        try newestLogEntry(uid: uid, macKey: macKey, version: version, ring: logRing(uid: uid, version: version))
    }

    /// Every valid log entry of the card's ring (`PurseState.logRing`), oldest first.
    public func readLog(uid: [UInt8], macKey: SymmetricKey, version: UInt8, ring: LogRing) throws -> [LogEntry] {
        try readLog(uid: uid, macKey: macKey, version: version, ring: ring, sectors: ring.sectors)
    }

    /// Every valid log entry, in the ring the card's purse value blocks name (read here: sector 2 is authenticated).
    public func readLog(uid: [UInt8], macKey: SymmetricKey, version: UInt8) throws -> [LogEntry] {
        try readLog(uid: uid, macKey: macKey, version: version, ring: logRing(uid: uid, version: version))
    }

    /// The valid entries of the sectors holding the slots of `counters` (a v2 ring spans eight sectors: deciding an
    /// intent or back-filling an entry needs two slots, so it reads one or two sectors, not all).
    func readLog(uid: [UInt8], macKey: SymmetricKey, version: UInt8, ring: LogRing, around counters: [UInt16]) throws -> [LogEntry] {
        try readLog(uid: uid, macKey: macKey, version: version, ring: ring,
                    sectors: Set(counters.map { session.size.sector(ofBlock: ring.block(forCounter: $0)) }).sorted())
    }

    private func readLog(uid: [UInt8], macKey: SymmetricKey, version: UInt8, ring: LogRing, sectors: [Int]) throws -> [LogEntry] {
        var entries: [LogEntry] = []
        for sector in sectors {
            let numbers = ring.blocks.filter { session.size.sector(ofBlock: $0) == sector }
            try authenticate(sector: sector, role: .terminal, uid: uid, version: version)
            for (number, block) in zip(numbers, try session.read(blocks: numbers)) {
                if let entry = LogEntry(block: block, number: number, uid: uid, macKey: macKey, ring: ring) { entries.append(entry) }
            }
        }
        return entries.sorted { $0.counter < $1.counter }
    }

    /// The card's log ring, read from the purse value blocks (for callers without a `PurseState`).
    func logRing(uid: [UInt8], version: UInt8) throws -> LogRing {
        try authenticate(sector: Self.purseSector, role: .terminal, uid: uid, version: version)
        return try Self.logRing(readValueSector(.purse))
    }

    /// The ring the purse value blocks name: the primary's address byte, or the backup's when the primary does not
    /// decode (a value change torn mid-write, which the rollback repairs by copying the backup over it). Both carry the
    /// same byte from issue on: value operations and copies never change it. An address no layout uses is refused.
    static func logRing(_ values: ValueSectorContents) throws -> LogRing {
        guard let address = values.primaryAddress ?? values.backupAddress else { return .v1 }  // no value decodes: refused later
        guard let ring = LogRing(valueAddress: address) else {
            throw CardOperationError(.unsupportedLayout, "the purse value blocks' address byte \(String(format: "%02X", address)) names no log layout this software knows: a card of a newer layout (update this terminal) or one altered with key B; nothing was written")
        }
        return ring
    }

    /// A tap that only reads: resolves the card (repairing it if an operation was torn) and decides this
    /// terminal's open intents for it.
    @discardableResult
    public func tap(terminal: Terminal) throws -> PurseState {
        let state = try readPurse(terminal: terminal)
        try settleOpenIntents(uidHex: state.uid.map { String(format: "%02X", $0) }.joined(), state: state, journal: terminal.journal)
        return state
    }

    // MARK: Debit

    /// Debits the purse: refuses (nothing written) a locked card, a replayed state, insufficient funds, and amounts
    /// over the holder's limits unless `pin` is the card's (`checkHolderLimits`: a wrong PIN is counted on the card);
    /// records the intent in the terminal's journal before the first write; commits with the record write; learns the
    /// outcome of this terminal's earlier interrupted intents.
    @discardableResult
    public func debit(_ amount: Fen, terminal: Terminal, pin: PIN? = nil) throws -> PurseState {
        try Self.checkLoggable(amount, "debit")
        let state = try readPurse(terminal: terminal)
        let uidHex = state.uid.map { String(format: "%02X", $0) }.joined()
        try settleOpenIntents(uidHex: uidHex, state: state, journal: terminal.journal)
        let record = state.record
        guard record.status == .normal else {
            throw CardOperationError(.cardLocked, "the card is \(record.status.name): no debit; send the holder to the card office")
        }
        guard record.expires >= CardDay(now) else {
            throw CardOperationError(.expired, "the card expired on \(record.expires): no debit; the holder needs a new card from the card office")
        }
        if let seen = terminal.lastSeenCounter(uidHex), record.counter < seen {
            throw CardOperationError(.replay, "the card's counter \(record.counter) is lower than this terminal last saw (\(seen)): an older card state was written back; no debit, keep the card and report it")
        }
        guard state.balance >= amount else {
            throw CardOperationError(.insufficientFunds, "insufficient funds: balance \(state.balance.yuan) yuan, debit \(amount.yuan) yuan; load the card first")
        }
        let today = CardDay(now)
        // A record stamped later than today (a terminal whose clock runs ahead) says nothing reliable about today.
        let alreadyToday = record.lastDay == today ? record.debitedToday : record.lastDay > today ? PurseRecord.unknownDebitedToday : .zero
        // The holder's limits (一密两限): reads sector 1 and checks the PIN only when a limit may require it.
        let holder = try checkHolderLimits(amount, alreadyToday: alreadyToday, state: state, pin: pin)
        let sequence = try terminal.journal.nextSequence()
        let intent = TransactionIntent(terminalID: terminal.id, terminalSequence: sequence, kind: .purseDebit, cardUID: uidHex,
                                       cardSerial: nil, amount: amount, balanceBefore: state.balance, counterBefore: record.counter,
                                       recordBefore: state.recordBlock, createdAt: now)
        do { try terminal.journal.record(intent) } catch {
            throw CardOperationError(.journal, "cannot record the transaction before writing the card (\(error)); nothing was written")
        }
        let after = Fen(state.balance.rawValue - amount.rawValue)
        let counter = record.counter &+ 1
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        let committed = PurseRecord(counter: counter, status: record.status, lastOperation: .debit, lastDay: today,
                                    debitedToday: alreadyToday == PurseRecord.unknownDebitedToday ? alreadyToday
                                        : Fen(min(alreadyToday.rawValue + amount.rawValue, PurseRecord.saturatedDebitedToday.rawValue)),
                                    expires: record.expires,
                                    terminalID: terminal.id.rawValue, terminalSequence: UInt8(truncatingIfNeeded: sequence),
                                    wrongPINTries: holder.wrongPINTries, holderLimitsLowered: holder.holderLimitsLowered)
        let warnings = try writeTearSafely(intent, done: .done(balanceAfter: after, counterAfter: counter), journal: terminal.journal, valueChange: {
            // Deciding an earlier intent may have read the log sectors: back to the purse (free when still authenticated).
            try authenticate(sector: Self.purseSector, role: .terminal, uid: state.uid, version: keystore.currentVersion)
            try session.decrement(block: Self.primary, by: Int32(amount.rawValue))
        }, commit: {
            try session.write(block: Self.record, committed.encode(uid: state.uid, balance: after, macKey: macKey))
        }, finish: {
            try updateBackup(byAdding: Fen(-amount.rawValue))
            try writeLog(LogEntry(operation: .debit, amount: amount, balanceAfter: after, counter: counter, terminal: intent.terminalTag),
                         uid: state.uid, macKey: macKey, ring: state.logRing)
        })
        return PurseState(uid: state.uid, balance: after, record: committed, resolution: state.resolution, macVersion: state.macVersion,
                          logRing: state.logRing, warnings: warnings)
    }

    /// The write phase of the tearing protocol, the same for every operation: the value change, the commit (the
    /// MAC'd record write), then what follows it (backup copy, log entry, settlement data). The terminal decides the
    /// intent itself whenever the card cannot show otherwise: a failure before the commit write was sent → not done
    /// (the record still vouches for the backup); once the commit write answered `90 00` → done, whatever fails after
    /// (the next tap repairs the backup). Only an unanswered commit write leaves the intent open for `outcome(of:…)`.
    ///
    /// Returns the warnings of a done operation whose steps after the commit failed (the card left, pcscd died, the
    /// log sector refused its key) or whose completion the journal could not record: the money moved all the same,
    /// so the operation returns — it never throws once the commit was acknowledged.
    @discardableResult
    func writeTearSafely(_ intent: TransactionIntent, done: TransactionOutcome, journal: any TerminalJournal,
                         valueChange: () throws -> Void, commit: () throws -> Void, finish: () throws -> Void) throws -> [String] {
        do { try valueChange() } catch {
            try? journal.complete(terminalSequence: intent.terminalSequence, outcome: .notDone)
            throw error
        }
        try commit()
        var warnings: [String] = []
        do { try finish() } catch {
            warnings.append("the \(intent.kind.rawValue) is done (committed on the card), but a step after the commit failed (\(error)): do not repeat it; any terminal completes the card's repair at its next tap")
        }
        do { try journal.complete(terminalSequence: intent.terminalSequence, outcome: done) } catch {
            warnings.append("the \(intent.kind.rawValue) is done on the card, but the journal could not record it (\(error)): do not repeat it; the card's next tap here completes the journal")
        }
        return warnings
    }

    /// Refuses, before anything is written, an amount the log entry cannot record (more than 20 bits of fen).
    static func checkLoggable(_ amount: Fen, _ operation: String) throws {
        guard amount > .zero else { throw CardOperationError(.overLimit, "a \(operation) must be more than 0.00 yuan") }
        guard amount <= LogEntry.maximumAmount else {
            throw CardOperationError(.overLimit, "a \(operation) of \(amount.yuan) yuan is more than one transaction can record (\(LogEntry.maximumAmount.yuan) yuan): split it")
        }
    }

    /// Decides this terminal's open purse intents from what the (resolved) card shows now (tearing rule 5).
    func settleOpenIntents(uidHex: String, state: PurseState, journal: any TerminalJournal) throws {
        let intents = try journal.openIntents(cardUID: uidHex).filter(\.isPurse)
        guard !intents.isEmpty else { return }
        var log: [UInt16: LogEntry]?
        let readLogOnce = {
            if let log { return log }
            let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
            // Only the slots rule 5 looks at: before + 1 and before + 2 of each open intent.
            let counters = intents.flatMap { [$0.counterBefore &+ 1, $0.counterBefore &+ 2] }
            let entries = try readLog(uid: state.uid, macKey: macKey, version: keystore.currentVersion, ring: state.logRing, around: counters)
            log = Dictionary(entries.map { ($0.counter, $0) }, uniquingKeysWith: { first, _ in first })
            return log!
        }
        for intent in intents {
            let outcome = try Self.outcome(of: intent, record: state.record, balance: state.balance, log: readLogOnce)
            try journal.complete(terminalSequence: intent.terminalSequence, outcome: outcome)
        }
    }

    /// The tearing protocol's decision for one purse intent still open, i.e. whose commit write went unanswered (the
    /// terminal decided every other tear itself: `writeTearSafely`). If it is done, the operation took counter
    /// before + 1 and wrote no log entry.
    /// - The record still shows counter before: not done.
    /// - The record shows before + 1 (written by an operation, not rebuilt): done iff it names this terminal id and
    ///   sequence and shows this intent's balance after; else another operation took the counter: not done.
    /// - The card moved on: a log entry for before + 1 was written by another operation's terminal after its commit,
    ///   so it is this intent's only if it carries this intent's terminal tag, operation, amount and balance (then
    ///   done), else not done. Without that entry (its write torn, or rotated out of the ring), the entry for before + 2
    ///   tells the balance after before + 1: this intent's balance before means before + 1 moved nothing (not done);
    ///   anything else cannot tell this intent from another operation of the same amount: undetermined.
    static func outcome(of intent: TransactionIntent, record: PurseRecord, balance: Fen,
                        log: () throws -> [UInt16: LogEntry]) throws -> TransactionOutcome {
        let committed = intent.counterBefore &+ 1
        let done = TransactionOutcome.done(balanceAfter: intent.balanceAfter, counterAfter: committed)
        if record.counter == intent.counterBefore { return .notDone }
        if record.counter == committed && record.lastOperation != .repair {
            let ours = record.terminalID == intent.terminalID.rawValue
                && record.terminalSequence == UInt8(truncatingIfNeeded: intent.terminalSequence)
                && balance == intent.balanceAfter
            return ours ? done : .notDone
        }
        guard record.counter &- committed < 0x8000 else { return .undetermined }  // the counter went back: a replayed card
        let entries = try log()
        if let entry = entries[committed] {
            let ours = entry.terminal == intent.terminalTag && entry.operation == LogEntry.operation(for: intent.kind)
                && entry.amount == intent.amount && entry.balanceAfter == intent.balanceAfter
            return ours ? done : .notDone
        }
        // The entry after it tells the balance after before + 1: had this intent taken that counter, it would be this
        // intent's balance after; anything else proves another operation took it.
        if let next = entries[committed &+ 1], let change = next.balanceChange, next.balanceAfter.rawValue - change != intent.balanceAfter.rawValue {
            return .notDone
        }
        return .undetermined
    }

    /// Brings the backup up to the committed primary: ACS copies it (restore + transfer); a reader without a copy
    /// command (OMNIKEY) applies the same increment/decrement to the backup, which was equal to the primary before.
    func updateBackup(_ layout: ValueSector = .purse, byAdding delta: Fen) throws {
        if session.canCopyValue {
            try session.copyValue(from: layout.primary, to: layout.backup)
        } else if delta.rawValue < 0 {
            try session.decrement(block: layout.backup, by: Int32(-delta.rawValue))
        } else {
            try session.increment(block: layout.backup, by: Int32(delta.rawValue))
        }
    }

    /// A sector holding a MAC'd record, a primary value block and its backup (the purse, the water wallet).
    public struct ValueSector: Sendable {
        public let sector: Int, record: Int, primary: Int, backup: Int
        public static let purse = ValueSector(sector: 2, record: 8, primary: 9, backup: 10)
        public static let water = ValueSector(sector: 3, record: 12, primary: 13, backup: 14)
    }

    /// The three blocks as read; a value block that does not decode is `nil`.
    public struct ValueSectorContents: Sendable {
        public var record: [UInt8]
        public var primary: Int32?
        public var backup: Int32?
        /// The address bytes of the value blocks that decode (the purse's names the card's log ring).
        public var primaryAddress: UInt8? = nil
        public var backupAddress: UInt8? = nil
    }

    enum ValueResolution {
        /// The record vouches for a value now held by both blocks (after any repair).
        case agreed(Int32, PurseState.Resolution)
        /// The record vouches for neither: torn (or forged) record; the backup as read.
        case recordTorn(backup: Int32?)
    }

    /// Reads record, primary and backup of an authenticated sector. Transport errors propagate (the card left);
    /// only a block that does not decode becomes nil. The backup is read every time: an operation must never start
    /// while the backup is torn, or a second tear would leave no valid copy of the value.
    func readValueSector(_ layout: ValueSector) throws -> ValueSectorContents {
        let blocks = try session.read(blocks: [layout.record, layout.primary, layout.backup])
        let (record, primaryBlock, backupBlock) = (blocks[0], blocks[1], blocks[2])
        let (primary, backup) = (try? ValueBlock(block: primaryBlock), try? ValueBlock(block: backupBlock))
        return ValueSectorContents(record: record, primary: primary?.value, backup: backup?.value,
                                   primaryAddress: primary?.address, backupAddress: backup?.address)
    }

    /// The tearing protocol's decision: the MAC'd record is the commit point. It vouches for the primary → done
    /// (repair the backup if it differs); for the backup → not done (restore the primary); for neither → torn record.
    func resolveValueSector(_ layout: ValueSector, _ values: ValueSectorContents, vouches: (Int32) -> Bool) throws -> ValueResolution {
        if let primary = values.primary, vouches(primary) {
            if values.backup == primary { return .agreed(primary, .consistent) }
            try repairCopy(from: layout.primary, to: layout.backup)
            return .agreed(primary, .backupRepaired)
        }
        if let backup = values.backup, vouches(backup) {
            try repairCopy(from: layout.backup, to: layout.primary)
            return .agreed(backup, .rolledBack)
        }
        return .recordTorn(backup: values.backup)
    }

    /// Copies one value block onto the other during repair; a reader without a copy command cannot repair.
    func repairCopy(from source: Int, to destination: Int) throws {
        guard session.canCopyValue else {
            throw CardOperationError(.readerCannot, "the card needs a repair (an operation was torn) that this reader (\(session.profile.name)) cannot do: tap it on an ACS reader or at the card office")
        }
        try session.copyValue(from: source, to: destination)
    }

    func writeLog(_ entry: LogEntry, uid: [UInt8], macKey: SymmetricKey, ring: LogRing) throws {
        let block = ring.block(forCounter: entry.counter)
        try authenticate(sector: session.size.sector(ofBlock: block), role: .terminal, uid: uid, version: keystore.currentVersion)
        try session.write(block: block, entry.encode(uid: uid, macKey: macKey, ring: ring))
    }

    /// Authenticates a sector for a role with the key of `version`, then — when the card can be re-selected — with
    /// the other known versions (a card not yet re-keyed, or a re-key torn half-way). Returns the version that opened it.
    @discardableResult
    func authenticate(sector: Int, role: KeyRole, uid: [UInt8], version: UInt8) throws -> UInt8 {
        let candidates = reselect == nil ? [version] : versions(preferring: version).filter { keystore.roles(version: $0).contains(role) }
        guard !candidates.isEmpty else {
            throw CardOperationError(.missingKey, "this keystore holds no \(role.rawValue) master: \(role == .loader ? "loads, water settlements and status changes are done at a loading station, whose keystore has one" : "use the card office's keystore or one exported from it")")
        }
        var lastError: (any Error)?
        for (index, candidate) in candidates.enumerated() {
            let key = try keystore.sectorKey(uid: uid, sector: sector, role: role, version: candidate)
            do {
                try session.authenticate(sector: sector, keyType: role == .loader ? .b : .a, key: key)
                return candidate
            } catch let error as MifareError where error.code == .authenticationFailed && index < candidates.count - 1 {
                lastError = error
                try reselect?()
                session.forgetAuthentication()
            }
        }
        throw lastError ?? MifareError(.authenticationFailed, "no key version opens sector \(sector)")
    }

    /// The known MAC key version under which `vouches` holds, newest first.
    func macVersion(uid: [UInt8], where vouches: (SymmetricKey) -> Bool) throws -> UInt8? {
        for version in keystore.knownVersions.sorted(by: >) where keystore.roles(version: version).contains(.mac) {
            if vouches(try keystore.macKey(uid: uid, version: version)) { return version }
        }
        return nil
    }
}

extension CampusCardOperations {
    /// Sector 0's MAD, read with the public MAD key: refuses a card whose MAD does not register our sectors.
    public func checkApplication() throws {
        do {
            try session.authenticate(sector: 0, keyType: .a, key: MAD.keyA)
            let mad = try MAD(blocks: session.read(block: 1) + session.read(block: 2))
            guard Self.ourSectors.allSatisfy({ mad.aids[$0 - 1] == Self.applicationID }) else {
                throw CardOperationError(.notCampusCard, "this card's MAD does not register the campus card application (AID \(String(Self.applicationID, radix: 16, uppercase: true))): it belongs to another application; not a campus card")
            }
        } catch let error as MifareError where error.code == .authenticationFailed || error.code == .accessDenied {
            throw CardOperationError(.notCampusCard, "this card has no MAD (sector 0 does not open with the MAD key): not a campus card, or a blank card (issue it first)")
        } catch is MADError {
            throw CardOperationError(.notCampusCard, "this card's MAD is damaged or absent: not a campus card")
        }
    }

    /// The identity record (sector 1), MAC-checked; a block 5 torn by a status change is repaired (`repairing`) at a
    /// terminal with the loader master. `uid`: the card's, when already read this session (saves an APDU).
    public func readIdentity(uid known: [UInt8]? = nil, repairing: Bool = true) throws -> Identity {
        let uid = try known ?? session.uid()
        do {
            try authenticate(sector: 1, role: .terminal, uid: uid, version: keystore.currentVersion)
        } catch let error as MifareError where error.code == .authenticationFailed {
            throw CardOperationError(.notCampusCard, "the card's identity sector does not open with this keystore's keys: not a campus card, a blank card (issue it first), issued by another system, or a key version this keystore lacks")
        }
        let blocks = try session.read(blocks: [Identity.blocks.first, Identity.blocks.second])
        let (first, second) = (blocks[0], blocks[1])
        let version = try Identity.versions(of: first).key
        guard keystore.knownVersions.contains(version) else {
            throw CardOperationError(.unknownKeyVersion, "the card uses key version \(version), unknown to this keystore: update the keystore")
        }
        for macVersion in keystore.knownVersions.sorted(by: >) where keystore.roles(version: macVersion).contains(.mac) {
            do {
                return try Identity(first: first, second: second, uid: uid, macKey: keystore.macKey(uid: uid, version: macVersion))
            } catch let error as CardOperationError where error.code == .tampered {
                continue
            }
        }
        // A status change torn while writing block 5: a terminal with the loader master (the card office, a station)
        // decides it from the purse record and goes on; others cannot write sector 1.
        guard repairing, keystore.roles(version: keystore.currentVersion).contains(.loader) else {
            throw CardOperationError(.tampered, "the identity record's MAC does not match: a status change torn mid-write (the card office's or a loading station's next tap repairs it) or a card altered without the MAC key; no operation here")
        }
        return try repairTornIdentity(first: first)
    }

    /// The identity's block 5 was torn (its MAC fails): the purse record — MAC-verified with the balance, written
    /// first when locking and last when unlocking — holds the status that is in force, and a copy of the expiry. Block
    /// 4 (written only at issue and re-key) is taken when its expiry matches that copy; block 5 is rewritten with the
    /// record's status. An interrupted lock is thereby done, an interrupted unlock not done (run it again).
    func repairTornIdentity(first: [UInt8]) throws -> Identity {
        let state = try readPurse()
        let identity = try Identity(unverifiedFirst: first, status: state.record.status, on: CardDay(now))
        guard identity.expires == state.record.expires else {
            throw CardOperationError(.tampered, "the identity record's MAC does not match and its expiry differs from the purse record's copy: altered without the MAC key; keep the card and report it")
        }
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        try authenticate(sector: 1, role: .loader, uid: state.uid, version: keystore.currentVersion)
        try session.write(block: Identity.blocks.second, identity.encode(uid: state.uid, macKey: macKey).second)
        return identity
    }
}
