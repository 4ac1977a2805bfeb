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
}

/// What a settlement did: the consumption to charge to the holder's account, and the refill written to the card.
public struct WaterSettlementResult: Sendable, Hashable {
    public var consumption: Fen
    public var refill: Fen
    public var state: WaterState
}

extension CampusCardOperations {
    /// Reads the water wallet, resolving and repairing a torn operation (key A: any water controller).
    public func readWater() throws -> WaterState {
        let uid = try session.uid()
        let version = keystore.currentVersion
        do {
            try authenticate(sector: ValueSector.water.sector, role: .terminal, uid: uid, version: version)
        } catch let error as MifareError where error.code == .authenticationFailed {
            throw CardOperationError(.notCampusCard, "the card's water wallet does not open with this keystore's keys: not a campus card, or issued before the water wallet existed")
        }
        let values = try readValueSector(.water)
        let macVersion = try self.macVersion(uid: uid) { key in
            [values.primary, values.backup].contains { $0.map { WaterRecord.vouches(values.record, for: $0, uid: uid, macKey: key) } ?? false }
        } ?? (try self.macVersion(uid: uid) { key in
            // A torn water record: the settlement block tells the card's MAC version.
            (try? authenticate(sector: 1, role: .terminal, uid: uid, version: version)).flatMap { _ in
                try? WaterSettlement(block: session.read(block: WaterSettlement.block), uid: uid, macKey: key)
            } != nil
        }) ?? version
        let macKey = try keystore.macKey(uid: uid, version: macVersion)
        try authenticate(sector: ValueSector.water.sector, role: .terminal, uid: uid, version: version)
        let vouches = { (value: Int32) in WaterRecord.vouches(values.record, for: value, uid: uid, macKey: macKey) }
        switch try resolveValueSector(.water, values, vouches: vouches) {
        case .agreed(let balance, let resolution):
            return WaterState(uid: uid, balance: Fen(Int(balance)), record: WaterRecord(block: values.record), resolution: resolution,
                              macVersion: macVersion)
        case .recordTorn(let backup):
            // Rebuild from the settlement data in sector 1 (written at each settlement), keeping the backup's value.
            try authenticate(sector: 1, role: .terminal, uid: uid, version: version)
            guard let backup, let settlement = try? WaterSettlement(block: session.read(block: WaterSettlement.block), uid: uid, macKey: macKey),
                  Fen(Int(backup)) <= settlement.cap else {
                throw CardOperationError(.tampered, "the water record vouches for no balance on the card: altered without the MAC key (or damaged); refill at the card office")
            }
            try authenticate(sector: ValueSector.water.sector, role: .terminal, uid: uid, version: version)
            try repairCopy(from: ValueSector.water.backup, to: ValueSector.water.primary)
            let rebuilt = WaterRecord(counter: 0, settlement: settlement, terminal: 0, rebuilt: true)
            try session.write(block: WaterRecord.block, rebuilt.encode(uid: uid, balance: Fen(Int(backup)), macKey: macKey))
            return WaterState(uid: uid, balance: Fen(Int(backup)), record: rebuilt, resolution: .recordRebuilt, macVersion: macVersion)
        }
    }

    /// A water controller's tap that only reads: resolves the wallet and decides this terminal's open water intents.
    @discardableResult
    public func waterTap(terminal: Terminal) throws -> WaterState {
        let state = try readWater()
        try settleWaterIntents(state, journal: terminal.journal)
        return state
    }

    /// One water unit (or any amount) debited from the water wallet: 3 block writes (decrement, record, backup).
    @discardableResult
    public func waterDebit(_ amount: Fen, terminal: Terminal) throws -> WaterState {
        guard amount > .zero else { throw CardOperationError(.overLimit, "a water debit must be more than 0.00 yuan") }
        let state = try readWater()
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
        try writeTearSafely(intent, done: .done(balanceAfter: after.rawValue, counterAfter: record.counter), journal: terminal.journal, valueChange: {
            try session.decrement(block: ValueSector.water.primary, by: Int32(amount.rawValue))
        }, commit: {
            try session.write(block: WaterRecord.block, record.encode(uid: state.uid, balance: after, macKey: macKey))
        }, finish: {
            try updateBackup(.water, byAdding: Fen(-amount.rawValue))
        })
        return WaterState(uid: state.uid, balance: after, record: record, resolution: state.resolution, macVersion: state.macVersion)
    }

    /// Settlement (key B, settlement station): the consumption since the last refill is `balance after the last
    /// refill - balance now` (right when that refill was partial), charged to the account; then the wallet is refilled
    /// towards its cap, by at most `maximumRefill` (what the account can pay).
    @discardableResult
    public func waterSettle(terminal: Terminal, reference: UInt32? = nil, maximumRefill: Fen? = nil) throws -> WaterSettlementResult {
        let identity = try readIdentity()
        try checkValidity(identity)
        let state = try readWater()
        try settleWaterIntents(state, journal: terminal.journal)
        let consumption = Fen(state.record.balanceAfterRefill.rawValue - state.balance.rawValue)
        guard consumption >= .zero else {
            if state.record.rebuilt {
                // Block 6 lagged a settlement whose commit went unanswered, then a torn record was rebuilt from it.
                throw CardOperationError(.tampered, "the water record was rebuilt from settlement data older than the last refill, so the consumption is unknown on the card: settle it at the card office, from the settlement service's record of the last refill")
            }
            throw CardOperationError(.tampered, "the water wallet holds more than after its last refill: altered card; keep it and report it")
        }
        let room = Fen(max(0, state.record.cap.rawValue - state.balance.rawValue))
        let refill = min(room, maximumRefill ?? room)
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        if let reference, reference >= Self.terminalReferences {
            throw CardOperationError(.overLimit, "settlement reference \(reference) is in the range terminals number their own settlements in (from \(Self.terminalReferences)): use the settlement service's reference, or none")
        }
        var sequence = try terminal.journal.nextSequence()
        if reference == nil && Self.defaultReference(terminal: terminal.id, sequence: sequence) == state.record.reference {
            // This terminal's sequence wrapped onto the one that wrote the card's last reference: skip that sequence
            // (a journal that counts hands out the next; one that numbers from its records gives the same again).
            sequence = max(try terminal.journal.nextSequence(), sequence &+ 1)
        }
        let reference = reference ?? Self.defaultReference(terminal: terminal.id, sequence: sequence)
        guard reference != state.record.reference else {
            throw CardOperationError(.overLimit, "settlement reference \(reference) is the card's last one: every settlement needs a new reference")
        }
        let intent = try record(.waterSettle, sequence: sequence, amount: refill, state: state, terminal: terminal, serial: identity.serial,
                                consumption: consumption.rawValue, reference: reference)
        let after = Fen(state.balance.rawValue + refill.rawValue)
        let settlement = WaterSettlement(cap: state.record.cap, balanceAfterRefill: after, reference: reference, day: CardDay(now))
        let record = WaterRecord(counter: state.record.counter &+ 1, settlement: settlement, terminal: intent.terminalTag.short)
        try writeTearSafely(intent, done: .done(balanceAfter: after.rawValue, counterAfter: record.counter), journal: terminal.journal, valueChange: {
            try authenticate(sector: ValueSector.water.sector, role: .loader, uid: state.uid, version: keystore.currentVersion)
            if refill > .zero { try session.increment(block: ValueSector.water.primary, by: Int32(refill.rawValue)) }
        }, commit: {
            try session.write(block: WaterRecord.block, record.encode(uid: state.uid, balance: after, macKey: macKey))
        }, finish: {
            if refill > .zero { try updateBackup(.water, byAdding: refill) }
            // The rebuild source lags the record: written after the commit.
            try authenticate(sector: 1, role: .loader, uid: state.uid, version: keystore.currentVersion)
            try session.write(block: WaterSettlement.block, settlement.encode(uid: state.uid, macKey: macKey))
        })
        return WaterSettlementResult(consumption: consumption, refill: refill, state: WaterState(uid: state.uid, balance: after, record: record, resolution: state.resolution, macVersion: state.macVersion))
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
                        consumption: Int?, reference: UInt32?) throws -> TransactionIntent {
        let intent = TransactionIntent(terminalID: UInt32(terminal.id), terminalSequence: sequence, kind: kind,
                                       cardUID: state.uid.map { String(format: "%02X", $0) }.joined(), cardSerial: serial,
                                       amount: amount.rawValue, balanceBefore: state.balance.rawValue, counterBefore: state.record.counter,
                                       consumption: consumption, referenceBefore: state.record.reference,
                                       settlementReference: reference, createdAt: now)
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
    /// water record keeps no log, a record rebuilt from block 6 restarts its counter at 0, and block 6 can lag the last
    /// settlement, so the settlement reference, the `rebuilt` mark and the balance decide:
    /// - settlement: the record carries this settlement's reference (references are unique) → done; the record was
    ///   rebuilt since the last settlement → by the balance (this intent's balance before: not done); otherwise the
    ///   reference read before → not done (without a rebuild the reference only moves forward);
    /// - unit debit: a settlement since (another reference) → undetermined; the record at counter before + 1 names this
    ///   terminal and shows the balance after → done; the balance is this intent's balance before → not done (without
    ///   a refill the balance only falls); without a rebuild, a record at counter before or before + 1 (another
    ///   terminal's) → not done;
    /// - anything else → undetermined. The wallet's money is settled by consumption at the next settlement either way.
    static func waterOutcome(of intent: TransactionIntent, record: WaterRecord, balance: Fen) -> TransactionOutcome {
        let committed = intent.counterBefore &+ 1
        let done = TransactionOutcome.done(balanceAfter: intent.balanceAfter, counterAfter: committed)
        if intent.kind == .waterSettle {
            if record.reference == intent.settlementReference { return done }
            if record.rebuilt { return balance.rawValue == intent.balanceBefore ? .notDone : .undetermined }
            return record.reference == intent.referenceBefore ? .notDone : .undetermined
        }
        guard record.reference == intent.referenceBefore else { return .undetermined }
        if record.counter == committed && record.terminal == intent.terminalTag.short && balance.rawValue == intent.balanceAfter { return done }
        if balance.rawValue == intent.balanceBefore { return .notDone }
        if !record.rebuilt && (record.counter == intent.counterBefore || record.counter == committed) { return .notDone }
        return .undetermined
    }
}
