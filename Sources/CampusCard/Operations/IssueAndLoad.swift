import CardReader
import Crypto
import Foundation
import MifareClassic

extension CampusCardOperations {
    /// Our MAD application ID (private, unregistered: see docs/card-layout.md).
    public static let applicationID: UInt16 = 0x8D01
    static let ourSectors = [1, 2, 3, 4, 5]

    /// Issues a blank card (transport keys FF..FF): MAD, identity, an empty purse, water wallet and log, then each
    /// sector's trailer last with our diversified keys and access bits. Needs the loader role (key B masters).
    /// Restartable: run again after a tear, it skips the sectors already finished.
    ///
    /// `ring`: the card's log ring — layout v2's 24 slots in sectors 4–11 (`LogRing.current`), or v1's six in sectors
    /// 4–5 (kept for tests of cards issued before v2). The purse value blocks' address byte names it.
    public func issue(_ identity: Identity, ring: LogRing = .current) throws {
        let uid = try session.uid()
        let version = keystore.currentVersion
        guard keystore.roles(version: version).contains(.loader) else {
            throw CardOperationError(.unknownKeyVersion, "this keystore holds no loader master: cards are issued at the card office's loading station")
        }
        let macKey = try keystore.macKey(uid: uid, version: version)
        var identity = identity
        identity.keyVersion = version
        let identityBlocks = identity.encode(uid: uid, macKey: macKey)
        var aids = [UInt16](repeating: MAD.free, count: 15)
        for sector in Self.ourSectors + ring.addedSectors { aids[sector - 1] = Self.applicationID }
        let mad = MAD(aids: aids).blocks
        let record = PurseRecord(counter: 0, status: identity.status, lastOperation: .issue, lastDay: CardDay(now), debitedToday: .zero,
                                 expires: identity.expires, terminalID: 0, terminalSequence: 0)
        let zero = [UInt8](repeating: 0, count: 16)
        let water = WaterSettlement(cap: WaterSettlement.defaultCap, balanceAfterRefill: .zero, reference: 0, day: CardDay(now))
        let waterRecord = WaterRecord(counter: 0, settlement: water, terminal: 0)
        let valueSectorBits = AccessBits(groups: [.transportData, .valueBlock, .valueBlock, AccessCondition(code: 0b011)!])
        let value = ValueBlock(value: 0, address: ring.valueAddress).block
        let logSectors = ring.sectors.map { sector in
            (sector: sector, blocks: (0..<3).map { (sector * 4 + $0, zero) }, bits: Self.accessBits(sector: sector))
        }
        let plan: [(sector: Int, blocks: [(Int, [UInt8])], bits: AccessBits)] = [
            (0, [(1, Array(mad[0..<16])), (2, Array(mad[16..<32]))], MAD.accessBits),
            (1, [(4, identityBlocks.first), (5, identityBlocks.second), (6, water.encode(uid: uid, macKey: macKey))],
             AccessBits(data: AccessCondition(code: 0b100)!, trailer: AccessCondition(code: 0b011)!)),
            (2, [(8, record.encode(uid: uid, balance: .zero, macKey: macKey)), (9, value), (10, value)], valueSectorBits),
            (3, [(12, waterRecord.encode(uid: uid, balance: .zero, macKey: macKey)), (13, ValueBlock(value: 0, address: 13).block),
                 (14, ValueBlock(value: 0, address: 13).block)], valueSectorBits),
        ] + logSectors
        var skipped: [Int] = []
        for step in plan {
            do {
                try session.authenticate(sector: step.sector, keyType: .a, key: .transport)
            } catch let error as MifareError where error.code == .authenticationFailed {
                // Restartable: a sector whose trailer already carries our keys was finished by an issue that was
                // torn later; any other sector that refuses the transport key means the card is not ours to issue.
                guard let reselect else {
                    throw CardOperationError(.notBlank, "sector \(step.sector) does not open with the transport key: the card is not blank (already issued?); use `card show`")
                }
                try reselect()
                session.forgetAuthentication()
                do {
                    try authenticate(sector: step.sector, role: .loader, uid: uid, version: version)
                } catch let error as MifareError where error.code == .authenticationFailed {
                    throw CardOperationError(.notBlank, "sector \(step.sector) opens neither with the transport key nor with ours: the card belongs to another system; use a blank card")
                }
                skipped.append(step.sector)
                continue
            }
            for (block, data) in step.blocks { try session.write(block: block, data) }
            let keyA = step.sector == 0 ? MAD.keyA : try keystore.sectorKey(uid: uid, sector: step.sector, role: .terminal, version: version)
            let keyB = try keystore.sectorKey(uid: uid, sector: step.sector, role: .loader, version: version)
            let trailer = SectorTrailer(keyA: keyA, accessBits: step.bits, userByte: step.sector == 0 ? MAD.generalPurposeByte : 0x69, keyB: keyB)
            try session.write(block: session.size.trailerBlock(ofSector: step.sector), trailer.block)
        }
        if skipped.count == plan.count {
            throw CardOperationError(.notBlank, "the card is already issued: use `card show`")
        }
    }

    /// Refuses a card the card office has locked or that has expired (stations read the identity; POS terminals
    /// rely on the purse record's status copy).
    func checkValidity(_ identity: Identity) throws {
        guard identity.status == .normal else {
            throw CardOperationError(.cardLocked, "the card is \(identity.status.name): send the holder to the card office")
        }
        guard identity.expires >= CardDay(now) else {
            throw CardOperationError(.expired, "the card expired on \(identity.expires): the holder needs a new card from the card office")
        }
    }

    /// Refuses an operation that writes with key B on a keystore without the loader master (a POS's), before anything
    /// is recorded or written: its intent would otherwise be journalled, and queued for upload, as not done.
    func requireLoader(_ operation: String) throws {
        guard keystore.roles(version: keystore.currentVersion).contains(.loader) else {
            throw CardOperationError(.unknownKeyVersion, "this keystore holds no loader master, which \(operation) needs (key B): run it at the card office's loading station or a load station; nothing was recorded or written")
        }
    }

    /// Loads money onto the purse (account top-up 圈存 or subsidy 补助) with key B.
    @discardableResult
    public func load(_ amount: Fen, terminal: Terminal, kind: TransactionIntent.Kind = .purseLoad) throws -> PurseState {
        guard kind == .purseLoad || kind == .purseSubsidy else {
            throw CardOperationError(.overLimit, "a purse load is a load or a subsidy, not \(kind.rawValue)")
        }
        try Self.checkLoggable(amount, "load")
        try requireLoader(kind == .purseSubsidy ? "a subsidy" : "a load")
        let identity = try readIdentity()
        try checkValidity(identity)
        let state = try readPurse(terminal: terminal)
        try reconcileStatus(identity, with: state)  // a status change torn between its writes is decided here
        let uidHex = state.uid.map { String(format: "%02X", $0) }.joined()
        try settleOpenIntents(uidHex: uidHex, state: state, journal: terminal.journal)
        guard state.record.status == .normal else {
            throw CardOperationError(.cardLocked, "the card is \(state.record.status.name): no load; send the holder to the card office")
        }
        guard state.balance.rawValue + amount.rawValue <= Fen.cardMaximum.rawValue else {
            throw CardOperationError(.overLimit, "the balance would exceed what a card holds")
        }
        let version = keystore.currentVersion
        let macKey = try keystore.macKey(uid: state.uid, version: state.macVersion)
        let sequence = try terminal.journal.nextSequence()
        let intent = TransactionIntent(terminalID: terminal.id, terminalSequence: sequence, kind: kind, cardUID: uidHex,
                                       cardSerial: identity.serial, amount: amount, balanceBefore: state.balance,
                                       counterBefore: state.record.counter, recordBefore: state.recordBlock, createdAt: now)
        do { try terminal.journal.record(intent) } catch {
            throw CardOperationError(.journal, "cannot record the transaction before writing the card (\(error)); nothing was written")
        }
        let after = Fen(state.balance.rawValue + amount.rawValue)
        let counter = state.record.counter &+ 1
        var committed = state.record
        committed.counter = counter
        committed.lastOperation = kind == .purseSubsidy ? .subsidy : .load
        committed.terminalID = terminal.id.rawValue
        committed.terminalSequence = UInt8(truncatingIfNeeded: sequence)
        let warnings = try writeTearSafely(intent, done: .done(balanceAfter: after, counterAfter: counter), journal: terminal.journal, valueChange: {
            try authenticate(sector: Self.purseSector, role: .loader, uid: state.uid, version: version)
            try session.increment(block: Self.primary, by: Int32(amount.rawValue))
        }, commit: {
            try session.write(block: Self.record, committed.encode(uid: state.uid, balance: after, macKey: macKey))
        }, finish: {
            try updateBackup(byAdding: amount)
            try writeLog(LogEntry(operation: committed.lastOperation, amount: amount, balanceAfter: after, counter: counter,
                                  terminal: intent.terminalTag), uid: state.uid, macKey: macKey, ring: state.logRing)
        })
        return PurseState(uid: state.uid, balance: after, record: committed, resolution: state.resolution, macVersion: state.macVersion,
                          logRing: state.logRing,
                          warnings: warnings)
    }
}
