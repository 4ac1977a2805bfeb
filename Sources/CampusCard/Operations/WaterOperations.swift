import CardReader
import Crypto
import Foundation
import MifareClassic

/// The water wallet as read (and repaired).
public struct WaterState: Sendable, Hashable {
    public var uid: [UInt8]
    public var balance: Fen
    public var record: WaterRecord
    public var resolution: PurseState.Resolution
    /// The card's MAC key version (see `PurseState.macVersion`).
    public var macVersion: UInt8 = 1

    /// The record as it vouches for `balance`, re-encoded (a terminal's witness of the state before its write).
    var recordBlock: [UInt8]?
    /// An operation that returned this state is done; these say what failed after its commit (see `writeTearSafely`).
    public var warnings: [String] = []
}

/// What a settlement, a refund or a reset did: the consumption to charge to the holder's account, and what was
/// written to the card.
public struct WaterSettlementResult: Sendable, Hashable {
    /// Since the last refill; `nil` when the card could not tell (a reset: the settlement service reconciles it).
    public var consumption: Fen?
    /// Added to the wallet (a settlement's refill, or a reset's new balance).
    public var refill: Fen
    /// Taken off the wallet back to the account (a cancelled card's water balance).
    public var refund: Fen
    /// A reset only: the value found in the wallet, which no MAC'd record vouched for (not counted as money).
    public var unverifiedBalance: Fen?
    public var state: WaterState
}

extension CampusCardOperations {
    /// Reads the water wallet, resolving and repairing a torn operation (key A: any water controller).
    ///
    /// A balance counts only when a MAC'd record vouches for it. The water wallet keeps no log, so when the record
    /// itself was torn mid-write nothing on the card vouches for either value: only `terminal`, when it is the one
    /// that was interrupted, can restore the card, from the MAC-verified record its journal kept (the intent's
    /// `recordBefore`). Anywhere else the card is refused (`waterInterrupted`) until that controller sees it again
    /// or a settlement station resets the wallet.
    public func readWater(terminal: Terminal? = nil, witnesses extra: [[UInt8]] = []) throws -> WaterState {
        let uid = try session.uid()
        let version = keystore.currentVersion
        do {
            try authenticate(sector: ValueSector.water.sector, role: .terminal, uid: uid, version: version)
        } catch let error as MifareError where error.code == .authenticationFailed {
            throw CardOperationError(.notCampusCard, "the card's water wallet does not open with this keystore's keys: not a campus card, or issued before the water wallet existed")
        }
        let values = try readValueSector(.water)
        let macVersion = try waterMACVersion(uid: uid, values: values)
        let macKey = try keystore.macKey(uid: uid, version: macVersion)
        try authenticate(sector: ValueSector.water.sector, role: .terminal, uid: uid, version: version)
        let vouches = { (value: Int32) in WaterRecord.vouches(values.record, for: value, uid: uid, macKey: macKey) }
        switch try resolveValueSector(.water, values, vouches: vouches) {
        case .agreed(let balance, let resolution):
            return WaterState(uid: uid, balance: Fen(Int(balance)), record: WaterRecord(block: values.record), resolution: resolution,
                              macVersion: macVersion, recordBlock: values.record)
        case .recordTorn:
            let uidHex = uid.map { String(format: "%02X", $0) }.joined()
            // An own intent's witness is the record before its torn commit: the card shows that case exactly when the
            // intent's value change is the last thing on it (backup = its balance before, primary = its balance after).
            // Otherwise its commit landed and the card moved on (a refill can bring the witness's balance back): the
            // torn record is a later writer's, and the witness a past state, not ours to put back.
            let own = try terminal?.journal.openIntents(cardUID: uidHex).reversed().filter { intent in
                !intent.isPurse && values.backup.map(Int.init) == intent.balanceBefore.rawValue && values.primary.map(Int.init) == intent.balanceAfter.rawValue
            } ?? []
            let witnesses = own.compactMap(\.recordBeforeBytes) + extra
            guard session.canCopyValue || witnesses.isEmpty else {
                throw CardOperationError(.readerCannot, "the card needs a repair (an operation was torn) that this reader (\(session.profile.name)) cannot do: tap it on an ACS reader or at the card office")
            }
            guard let witness = witnesses.first(where: { block in
                [values.primary, values.backup].contains { $0.map { WaterRecord.vouches(block, for: $0, uid: uid, macKey: macKey) } ?? false }
            }) else {
                throw CardOperationError(.waterInterrupted, "the water wallet was interrupted while its record was written, and nothing on the card vouches for its balance: tap it again at the water controller where that happened, or at a settlement station (which resets the wallet; the settlement service reconciles the balance)")
            }
            // This terminal's own journal holds the record it verified before its torn write: put it back, then
            // resolve as usual (it vouches for the value before: rolled back).
            try session.write(block: WaterRecord.block, witness)
            let restored = ValueSectorContents(record: witness, primary: values.primary, backup: values.backup)
            guard case .agreed(let balance, _) = try resolveValueSector(.water, restored, vouches: {
                WaterRecord.vouches(witness, for: $0, uid: uid, macKey: macKey)
            }) else { throw CardOperationError(.tampered, "the water record this terminal restored vouches for no value: report it") }
            return WaterState(uid: uid, balance: Fen(Int(balance)), record: WaterRecord(block: witness), resolution: .rolledBack,
                              macVersion: macVersion, recordBlock: witness)
        }
    }

    /// The card's MAC version for the water wallet: the one under which the record vouches for a value, else (a torn
    /// record) the one under which the settlement block in sector 1 verifies, else the keystore's current one.
    private func waterMACVersion(uid: [UInt8], values: ValueSectorContents) throws -> UInt8 {
        let version = keystore.currentVersion
        if let found = try macVersion(uid: uid, where: { key in
            [values.primary, values.backup].contains { $0.map { WaterRecord.vouches(values.record, for: $0, uid: uid, macKey: key) } ?? false }
        }) { return found }
        guard (try? authenticate(sector: 1, role: .terminal, uid: uid, version: version)) != nil,
              let block = try? session.read(block: WaterSettlement.block) else { return version }
        return try macVersion(uid: uid, where: { key in (try? WaterSettlement(block: block, uid: uid, macKey: key)) != nil }) ?? version
    }

    /// A water controller's tap that only reads: resolves the wallet and decides this terminal's open water intents.
    @discardableResult
    public func waterTap(terminal: Terminal) throws -> WaterState {
        let state = try readWater(terminal: terminal)
        try settleWaterIntents(state, journal: terminal.journal)
        return state
    }

    /// One water unit (or any amount) debited from the water wallet: 3 block writes (decrement, record, backup).
    /// Refuses a card that is not `normal` or has expired, from its MAC'd identity; a water controller that checked
    /// that when the card arrived passes `validityChecked` for the units that follow in the same presence.
    @discardableResult
    public func waterDebit(_ amount: Fen, terminal: Terminal, validityChecked: Bool = false) throws -> WaterState {
        guard amount > .zero else { throw CardOperationError(.overLimit, "a water debit must be more than 0.00 yuan") }
        if !validityChecked { try checkValidity(readIdentity()) }
        let state = try readWater(terminal: terminal)
        try settleWaterIntents(state, journal: terminal.journal)
        guard state.balance >= amount else {
            throw CardOperationError(.insufficientFunds, "the water wallet holds \(state.balance.yuan) yuan, less than \(amount.yuan): refill it at a settlement station")
        }
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        let intent = try record(.waterDebit, sequence: terminal.journal.nextSequence(), amount: amount, state: state, terminal: terminal,
                                serial: nil, consumption: nil, reference: nil)
        var record = state.record
        record.counter = record.counter &+ 1
        record.terminal = intent.terminalTag.short
        let after = Fen(state.balance.rawValue - amount.rawValue)
        let warnings = try writeTearSafely(intent, done: .done(balanceAfter: after, counterAfter: record.counter), journal: terminal.journal, valueChange: {
            try session.decrement(block: ValueSector.water.primary, by: Int32(amount.rawValue))
        }, commit: {
            try session.write(block: WaterRecord.block, record.encode(uid: state.uid, balance: after, macKey: macKey))
        }, finish: {
            try updateBackup(.water, byAdding: Fen(-amount.rawValue))
        })
        return WaterState(uid: state.uid, balance: after, record: record, resolution: state.resolution, macVersion: state.macVersion,
                          warnings: warnings)
    }

    /// Settlement (key B, settlement station): the consumption since the last refill is `balance after the last
    /// refill - balance now` (right when that refill was partial), charged to the account; then the wallet is refilled
    /// towards its cap, by at most `maximumRefill` (what the account can pay). A wallet whose record was torn and that
    /// nothing vouches for is reset instead (`resetWater`).
    @discardableResult
    public func waterSettle(terminal: Terminal, reference: UInt32? = nil, maximumRefill: Fen? = nil) throws -> WaterSettlementResult {
        let identity = try readIdentity()
        try checkValidity(identity)
        return try settleWallet(identity: identity, terminal: terminal, reference: reference, kind: .waterSettle) { state in
            let room = Fen(max(0, state.record.cap.rawValue - state.balance.rawValue))
            return min(room, maximumRefill ?? room)
        }
    }

    /// Empties the water wallet of a card being cancelled: the consumption since the last refill is recorded (charged
    /// to the account) and the rest leaves the card (`refund`, back to the account). Status is not checked: the card
    /// office runs it on cards it is cancelling. Key B.
    @discardableResult
    public func emptyWater(terminal: Terminal, reference: UInt32? = nil) throws -> WaterSettlementResult {
        let identity = try readIdentity()
        return try settleWallet(identity: identity, terminal: terminal, reference: reference, kind: .waterRefund) { state in
            Fen(-state.balance.rawValue)
        }
    }

    /// The write phase shared by a settlement (`change` ≥ 0: the refill) and a refund (`change` = -balance): a new
    /// settlement reference and after-refill balance in the record (the commit) and in block 6 (after it).
    private func settleWallet(identity: Identity, terminal: Terminal, reference: UInt32?, kind: TransactionIntent.Kind,
                              change: (WaterState) -> Fen) throws -> WaterSettlementResult {
        try requireLoader(kind == .waterRefund ? "emptying the water wallet" : "a water settlement")
        if let reference, reference >= Self.terminalReferences {
            throw CardOperationError(.overLimit, "settlement reference \(reference) is in the range terminals number their own settlements in (from \(Self.terminalReferences)): use the settlement service's reference, or none")
        }
        let state: WaterState
        do {
            state = try readWater(terminal: terminal)
        } catch let error as CardOperationError where error.code == .waterInterrupted {
            let target = kind == .waterRefund ? Fen.zero : nil
            return try resetWater(identity: identity, terminal: terminal, reference: reference, target: target, capping: change)
        }
        try settleWaterIntents(state, journal: terminal.journal)
        let consumption = Fen(state.record.balanceAfterRefill.rawValue - state.balance.rawValue)
        guard consumption >= .zero else {
            if state.record.rebuilt {
                // Written by an earlier version, which rebuilt torn records from block 6: that can lag a settlement.
                throw CardOperationError(.tampered, "the water record was rebuilt from settlement data older than the last refill, so the consumption is unknown on the card: reset the wallet at the card office (`cardctl card repair`)")
            }
            throw CardOperationError(.tampered, "the water wallet holds more than after its last refill: altered card; keep it and report it")
        }
        let delta = change(state)
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        var sequence = try terminal.journal.nextSequence()
        if reference == nil && Self.defaultReference(terminal: terminal.id.rawValue, sequence: sequence) == state.record.reference {
            // This terminal's sequence wrapped onto the one that wrote the card's last reference: skip that sequence
            // (a journal that counts hands out the next; one that numbers from its records gives the same again).
            sequence = max(try terminal.journal.nextSequence(), sequence &+ 1)
        }
        let reference = reference ?? Self.defaultReference(terminal: terminal.id.rawValue, sequence: sequence)
        guard reference != state.record.reference else {
            throw CardOperationError(.overLimit, "settlement reference \(reference) is the card's last one: every settlement needs a new reference")
        }
        let intent = try record(kind, sequence: sequence, amount: Fen(abs(delta.rawValue)), state: state, terminal: terminal, serial: identity.serial,
                                consumption: consumption, reference: reference)
        let after = Fen(state.balance.rawValue + delta.rawValue)
        let settlement = WaterSettlement(cap: state.record.cap, balanceAfterRefill: after, reference: reference, day: CardDay(now))
        let record = WaterRecord(counter: state.record.counter &+ 1, settlement: settlement, terminal: intent.terminalTag.short)
        let warnings = try writeTearSafely(intent, done: .done(balanceAfter: after, counterAfter: record.counter), journal: terminal.journal, valueChange: {
            try authenticate(sector: ValueSector.water.sector, role: .loader, uid: state.uid, version: keystore.currentVersion)
            if delta > .zero { try session.increment(block: ValueSector.water.primary, by: Int32(delta.rawValue)) }
            if delta < .zero { try session.decrement(block: ValueSector.water.primary, by: Int32(-delta.rawValue)) }
        }, commit: {
            try session.write(block: WaterRecord.block, record.encode(uid: state.uid, balance: after, macKey: macKey))
        }, finish: {
            if delta != .zero { try updateBackup(.water, byAdding: delta) }
            // The settlement block lags the record: written after the commit.
            try authenticate(sector: 1, role: .loader, uid: state.uid, version: keystore.currentVersion)
            try session.write(block: WaterSettlement.block, settlement.encode(uid: state.uid, macKey: macKey))
        })
        return WaterSettlementResult(consumption: consumption, refill: max(delta, .zero), refund: max(Fen(-delta.rawValue), .zero),
                                     unverifiedBalance: nil,
                                     state: WaterState(uid: state.uid, balance: after, record: record, resolution: state.resolution, macVersion: state.macVersion,
                                                       warnings: warnings))
    }

    /// Re-initialises a water wallet whose record was torn and that no MAC'd record vouches for (key B: a settlement
    /// station or the card office). Nothing on the card tells its balance or the consumption since the last refill,
    /// so neither is trusted: both value blocks are written with the new balance — `target`, else the refill
    /// `capping` allows from an empty wallet — and the value found is reported as unverified, for the settlement
    /// service to reconcile from the water controllers' uploads. A forged balance therefore buys nothing.
    func resetWater(identity: Identity, terminal: Terminal, reference: UInt32?, target: Fen?,
                    capping: (WaterState) -> Fen) throws -> WaterSettlementResult {
        let uid = try session.uid()
        let uidHex = uid.map { String(format: "%02X", $0) }.joined()
        let version = keystore.currentVersion
        try authenticate(sector: ValueSector.water.sector, role: .loader, uid: uid, version: version)
        let values = try readValueSector(.water)
        let macVersion = try waterMACVersion(uid: uid, values: values)
        let macKey = try keystore.macKey(uid: uid, version: macVersion)
        try authenticate(sector: 1, role: .loader, uid: uid, version: version)
        let last = try? WaterSettlement(block: session.read(block: WaterSettlement.block), uid: uid, macKey: macKey)
        let cap = last?.cap ?? WaterSettlement.defaultCap
        // A reset of ours that left the record torn did not commit (a committed one leaves a valid record).
        for open in try terminal.journal.openIntents(cardUID: uidHex) where open.kind == .waterReset {
            try terminal.journal.complete(terminalSequence: open.terminalSequence, outcome: .notDone)
        }
        let empty = WaterState(uid: uid, balance: .zero, record: WaterRecord(counter: 0, settlement: WaterSettlement(
            cap: cap, balanceAfterRefill: .zero, reference: last?.reference ?? 0, day: CardDay(now)), terminal: 0), resolution: .recordRebuilt,
                               macVersion: macVersion)
        let balance = min(max(target ?? capping(empty), .zero), cap)
        let unverified = Fen(Int(values.backup ?? values.primary ?? 0))
        let sequence = try terminal.journal.nextSequence()
        let reference = reference ?? Self.defaultReference(terminal: terminal.id.rawValue, sequence: sequence)
        let intent = TransactionIntent(terminalID: terminal.id, terminalSequence: sequence, kind: .waterReset, cardUID: uidHex,
                                       cardSerial: identity.serial, amount: balance, balanceBefore: unverified, counterBefore: 0,
                                       consumption: nil, referenceBefore: last?.reference, settlementReference: reference, createdAt: now)
        do { try terminal.journal.record(intent) } catch {
            throw CardOperationError(.journal, "cannot record the transaction before writing the card (\(error)); nothing was written")
        }
        let settlement = WaterSettlement(cap: cap, balanceAfterRefill: balance, reference: reference, day: CardDay(now))
        let record = WaterRecord(counter: 0, settlement: settlement, terminal: intent.terminalTag.short)
        let warnings = try writeTearSafely(intent, done: .done(balanceAfter: balance, counterAfter: 0), journal: terminal.journal, valueChange: {
            try authenticate(sector: ValueSector.water.sector, role: .loader, uid: uid, version: version)
            let block = ValueBlock(value: Int32(balance.rawValue), address: UInt8(ValueSector.water.primary)).block
            try session.write(block: ValueSector.water.primary, block)
            try session.write(block: ValueSector.water.backup, block)
        }, commit: {
            try session.write(block: WaterRecord.block, record.encode(uid: uid, balance: balance, macKey: macKey))
        }, finish: {
            try authenticate(sector: 1, role: .loader, uid: uid, version: version)
            try session.write(block: WaterSettlement.block, settlement.encode(uid: uid, macKey: macKey))
        })
        let state = WaterState(uid: uid, balance: balance, record: record, resolution: .recordRebuilt, macVersion: macVersion, warnings: warnings)
        // This station's other open intents for the card are decided against what the card shows now.
        try? settleWaterIntents(state, journal: terminal.journal)
        return WaterSettlementResult(consumption: nil, refill: balance, refund: .zero, unverifiedBalance: unverified, state: state)
    }

    /// Settlement references from here up are numbered by the terminals themselves (when the caller gives none).
    public static let terminalReferences: UInt32 = 0x8000_0000

    /// A terminal's own settlement reference: the top bit, all 16 bits of the terminal id, the low 15 bits of the
    /// sequence. Distinct terminals never share one (every id 1-65535 has its own range); one terminal's repeat only
    /// after 32,768 sequences, and `waterSettle` skips a sequence whose reference is the card's current one.
    public static func defaultReference(terminal id: UInt16, sequence: UInt32) -> UInt32 {
        terminalReferences | UInt32(id) << 15 | sequence & 0x7FFF
    }

    /// Records a water intent in the terminal's journal before the first write.
    private func record(_ kind: TransactionIntent.Kind, sequence: UInt32, amount: Fen, state: WaterState, terminal: Terminal, serial: UInt32?,
                        consumption: Fen?, reference: UInt32?) throws -> TransactionIntent {
        let intent = TransactionIntent(terminalID: terminal.id, terminalSequence: sequence, kind: kind,
                                       cardUID: state.uid.map { String(format: "%02X", $0) }.joined(), cardSerial: serial,
                                       amount: amount, balanceBefore: state.balance, counterBefore: state.record.counter,
                                       consumption: consumption, referenceBefore: state.record.reference,
                                       settlementReference: reference, recordBefore: state.recordBlock, createdAt: now)
        do { try terminal.journal.record(intent) } catch {
            throw CardOperationError(.journal, "cannot record the transaction before writing the card (\(error)); nothing was written")
        }
        return intent
    }

    /// Decides this terminal's open water intents from the water record (there is no water log).
    func settleWaterIntents(_ state: WaterState, journal: any TerminalJournal) throws {
        let uidHex = state.uid.map { String(format: "%02X", $0) }.joined()
        for intent in try journal.openIntents(cardUID: uidHex) where !intent.isPurse {
            try journal.complete(terminalSequence: intent.terminalSequence,
                                 outcome: Self.waterOutcome(of: intent, record: state.record, balance: state.balance))
        }
    }

    /// Decides one open water intent (its commit write went unanswered; see `outcome(of:record:balance:log:)`). The
    /// water record keeps no log, a reset (or a record rebuilt from block 6 by earlier versions) restarts its counter
    /// at 0, so the settlement reference, the `rebuilt` mark and the balance decide:
    /// - settlement, refund or reset: the record carries this settlement's reference (references are unique) → done; the record was
    ///   rebuilt since the last settlement → by the balance (this intent's balance before: not done); otherwise the
    ///   reference read before → not done (without a rebuild the reference only moves forward);
    /// - unit debit: a settlement since (another reference) → undetermined; the record at counter before + 1 names this
    ///   terminal and shows the balance after → done; the balance is this intent's balance before → not done (without
    ///   a refill the balance only falls); without a rebuild, a record at counter before or before + 1 (another
    ///   terminal's) → not done;
    /// - anything else → undetermined. The wallet's money is settled by consumption at the next settlement either way.
    static func waterOutcome(of intent: TransactionIntent, record: WaterRecord, balance: Fen) -> TransactionOutcome {
        let committed = intent.counterBefore &+ 1
        let done = TransactionOutcome.done(balanceAfter: intent.balanceAfter, counterAfter: intent.kind == .waterReset ? 0 : committed)
        if intent.kind != .waterDebit {
            if record.reference == intent.settlementReference { return done }
            if record.rebuilt { return balance == intent.balanceBefore ? .notDone : .undetermined }
            return record.reference == intent.referenceBefore ? .notDone : .undetermined
        }
        guard record.reference == intent.referenceBefore else { return .undetermined }
        if record.counter == committed && record.terminal == intent.terminalTag.short && balance == intent.balanceAfter { return done }
        if balance == intent.balanceBefore { return .notDone }
        if !record.rebuilt && (record.counter == intent.counterBefore || record.counter == committed) { return .notDone }
        return .undetermined
    }
}
