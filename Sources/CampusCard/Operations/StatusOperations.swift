import CardReader
import MifareClassic

extension CampusCardOperations {
    /// The identity, or — when its MAC fails because a status change or a re-key tore blocks 4/5 — block 4 read
    /// unverified with the status from the purse record (MAC-verified in `state`), for the card office to rewrite.
    func identityRepairingTear(_ state: PurseState) throws -> Identity {
        do {
            return try readIdentity()
        } catch let error as CardOperationError where error.code == .tampered {
            try authenticate(sector: 1, role: .terminal, uid: state.uid, version: keystore.currentVersion)
            return try Identity(unverifiedFirst: session.read(block: Identity.blocks.first), status: state.record.status, on: CardDay(now))
        }
    }

    /// Locks (lost, frozen, cancelled) or unlocks (normal) a card, on the card itself, so any terminal refuses it even
    /// with a stale blacklist. Needs the loader master (key B).
    ///
    /// Order: the purse record's status copy — the one every debit reads — is written first when locking and last when
    /// unlocking, so a torn status change never leaves a card that debits while the identity says locked.
    @discardableResult
    public func setStatus(_ status: Identity.Status) throws -> PurseState {
        let state = try readPurse()
        // A log write torn after its backup copy leaves a gap at the record's counter that no tap notices; were this
        // change's record write torn too, the record could not be rebuilt. The office fills the gap first.
        try? fillLogGap(state)
        var identity = try identityRepairingTear(state)
        let version = identity.keyVersion
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        var record = state.record
        record.status = status
        record.counter = record.counter &+ 1
        record.lastOperation = .statusChange
        // Not a terminal's transaction: no terminal id or sequence that an interrupted terminal could take for its own.
        record.terminalID = 0
        record.terminalSequence = 0
        identity.status = status
        identity.statusChanged = CardDay(now)
        let writeRecord = {
            try self.authenticate(sector: Self.purseSector, role: .loader, uid: state.uid, version: version)
            try self.session.write(block: Self.record, record.encode(uid: state.uid, balance: state.balance, macKey: macKey))
        }
        let writeIdentity = {
            try self.authenticate(sector: 1, role: .loader, uid: state.uid, version: version)
            let blocks = identity.encode(uid: state.uid, macKey: macKey)
            try self.session.write(block: Identity.blocks.second, blocks.second)
        }
        if status == .normal {
            try writeIdentity()
            try writeRecord()
        } else {
            try writeRecord()
            try writeIdentity()
        }
        // Every operation that moves the counter logs it, so a status change leaves no gap in the log for a rebuild or
        // an interrupted terminal's decision to trip over (a torn log write still can: docs/card-layout.md rule 6).
        try writeLog(LogEntry(operation: .statusChange, amount: .zero, balanceAfter: state.balance, counter: record.counter,
                              terminal: .none), uid: state.uid, macKey: macKey, ring: state.logRing)
        return PurseState(uid: state.uid, balance: state.balance, record: record, resolution: state.resolution, macVersion: state.macVersion,
                          logRing: state.logRing)
    }

    /// A status change torn between its two writes leaves the identity and the purse record's status copy
    /// disagreeing. The purse record decides — it is written first when locking and last when unlocking, so the change
    /// is done exactly when it shows it — and a terminal with the loader master rewrites block 5 to match. Returns the
    /// identity as it now is (unchanged where this terminal cannot write sector 1).
    @discardableResult
    public func reconcileStatus(_ identity: Identity, with state: PurseState) throws -> Identity {
        guard identity.status != state.record.status, keystore.roles(version: keystore.currentVersion).contains(.loader) else { return identity }
        var decided = identity
        decided.status = state.record.status
        decided.statusChanged = CardDay(now)
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        try authenticate(sector: 1, role: .loader, uid: state.uid, version: keystore.currentVersion)
        try session.write(block: Identity.blocks.second, decided.encode(uid: state.uid, macKey: macKey).second)
        return decided
    }
}
