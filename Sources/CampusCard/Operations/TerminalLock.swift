import CardReader
import MifareClassic

extension CampusCardOperations {
    /// Locks a blacklisted card at a terminal (a POS, a water controller, a settlement station), which has key A only:
    /// the purse record's status copy — the one every debit reads — with its log entry. The identity record (sector 1,
    /// key B) keeps its old status until the card office's next tap reconciles it from the purse record
    /// (`reconcileStatus`), as after a torn status change. Unlocking is for the card office (`setStatus(.normal)`).
    ///
    /// A torn record write is rolled back from the log at the next tap (the lock not done): the blacklist still lists
    /// the card, so that tap locks it again.
    @discardableResult
    public func lockAtTerminal(_ status: Identity.Status) throws -> PurseState {
        guard status != .normal else {
            throw CardOperationError(.invalidHolderSetting, "a terminal can lock a card, not unlock it: unlock it at the card office")
        }
        let state = try readPurse()
        if state.record.status == status { return state }
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        var record = state.record
        record.status = status
        record.counter = record.counter &+ 1
        record.lastOperation = .statusChange
        record.terminalID = 0
        record.terminalSequence = 0
        try authenticate(sector: Self.purseSector, role: .terminal, uid: state.uid, version: keystore.currentVersion)
        try session.write(block: Self.record, record.encode(uid: state.uid, balance: state.balance, macKey: macKey))
        try writeLog(LogEntry(operation: .statusChange, amount: .zero, balanceAfter: state.balance, counter: record.counter,
                              terminal: .none), uid: state.uid, macKey: macKey, ring: state.logRing)
        return PurseState(uid: state.uid, balance: state.balance, record: record, resolution: state.resolution, macVersion: state.macVersion,
                          logRing: state.logRing)
    }
}
