import CardReader
import MifareClassic

extension CampusCardOperations {
    /// Locks (lost, frozen, cancelled) or unlocks (normal) a card, on the card itself, so any terminal refuses it even
    /// with a stale blacklist. Needs the loader master (key B).
    ///
    /// Order: the purse record's status copy — the one every debit reads — is written first when locking and last when
    /// unlocking, so a torn status change never leaves a card that debits while the identity says locked.
    @discardableResult
    public func setStatus(_ status: Identity.Status) throws -> PurseState {
        let state = try readPurse()
        var identity: Identity
        do {
            identity = try readIdentity()
        } catch let error as CardOperationError where error.code == .tampered {
            // Block 5 torn by an earlier status change: the purse record (MAC-verified above) holds the status.
            try authenticate(sector: 1, role: .terminal, uid: state.uid, version: keystore.currentVersion)
            identity = try Identity(unverifiedFirst: session.read(block: Identity.blocks.first), status: state.record.status, on: CardDay(now))
        }
        let version = identity.keyVersion
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        var record = state.record
        record.status = status
        record.counter = record.counter &+ 1
        record.lastOperation = .statusChange
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
        return PurseState(uid: state.uid, balance: state.balance, record: record, resolution: state.resolution, macVersion: state.macVersion)
    }
}
