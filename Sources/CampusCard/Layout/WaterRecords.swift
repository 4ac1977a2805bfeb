import Crypto

/// The water wallet's settlement data: sector 1 block 6, written by key B at issue and at each settlement.
/// Also the source from which a torn water record is rebuilt.
public struct WaterSettlement: Hashable, Sendable {
    public static let block = 6
    /// Default cap 1000 fen (10 yuan); at most 10000 fen (100 yuan).
    public static let defaultCap = Fen(1_000)
    public static let maximumCap = Fen(10_000)

    public var cap: Fen
    /// The wallet's balance right after the last refill (not the cap: a refill may have been partial).
    public var balanceAfterRefill: Fen
    public var reference: UInt32
    public var day: CardDay

    public init(cap: Fen, balanceAfterRefill: Fen, reference: UInt32, day: CardDay) {
        self.cap = cap
        self.balanceAfterRefill = balanceAfterRefill
        self.reference = reference
        self.day = day
    }

    /// 16 bytes: cap u16 | balance after the last refill u16 | settlement reference u32 | day u16 | reserved ×2 |
    /// MAC ×4. Traps on a cap above `maximumCap` or a balance outside 0...cap (callers validate first).
    public func encode(uid: [UInt8], macKey: SymmetricKey) -> [UInt8] {
        precondition(cap <= Self.maximumCap && cap >= .zero, "the water cap is 0...\(Self.maximumCap.yuan) yuan")
        precondition(balanceAfterRefill >= .zero && balanceAfterRefill <= cap, "the balance after a refill is 0...cap")
        let body = Field.put16(UInt16(cap.rawValue)) + Field.put16(UInt16(balanceAfterRefill.rawValue)) + Field.put32(reference)
            + Field.put16(day.rawValue) + [0, 0]
        return body + CardMAC.compute(key: macKey, uid: uid, block: Self.block, record: body)
    }

    public init(block: [UInt8], uid: [UInt8], macKey: SymmetricKey) throws {
        guard block.count == 16, CardMAC.matches(Array(block[12..<16]), CardMAC.compute(key: macKey, uid: uid, block: Self.block, record: Array(block[0..<12]))) else {
            throw CardOperationError(.tampered, "the water settlement record's MAC does not match: refill at the card office")
        }
        self.init(cap: Fen(Int(Field.u16(block, 0))), balanceAfterRefill: Fen(Int(Field.u16(block, 2))),
                  reference: Field.u32(block, 4), day: CardDay(rawValue: Field.u16(block, 8)))
    }
}

/// The water wallet record: sector 3 block 12, rewritten by every unit debit (the commit point), MAC over the primary.
public struct WaterRecord: Hashable, Sendable {
    public static let block = 12

    /// Unit debits since issue (statistics; reset to 0 when a torn record is rebuilt).
    public var counter: UInt16
    public var cap: Fen
    public var balanceAfterRefill: Fen
    public var reference: UInt32
    /// Who wrote it: `TerminalTag.short` (terminal id low byte, sequence low byte); 0 as issued or rebuilt.
    public var terminal: UInt16
    /// Rebuilt from block 6 since the last settlement (the top bit of the cap field): block 6 can lag the record, so
    /// the reference and after-refill balance it restored may be older than the last settlement's.
    public var rebuilt: Bool

    public init(counter: UInt16, settlement: WaterSettlement, terminal: UInt16, rebuilt: Bool = false) {
        self.counter = counter
        cap = settlement.cap
        balanceAfterRefill = settlement.balanceAfterRefill
        reference = settlement.reference
        self.terminal = terminal
        self.rebuilt = rebuilt
    }

    /// 16 bytes: unit counter u16 | cap u16 | balance after the last refill u16 | settlement reference u32 |
    /// terminal tag u16 | MAC ×4 over UID, block number, bytes 0–11 and `balance` (the primary it commits).
    public func encode(uid: [UInt8], balance: Fen, macKey: SymmetricKey) -> [UInt8] {
        precondition(cap <= WaterSettlement.maximumCap && cap >= .zero, "the water cap is 0...\(WaterSettlement.maximumCap.yuan) yuan")
        precondition(balanceAfterRefill >= .zero && balanceAfterRefill <= cap, "the balance after a refill is 0...cap")
        let body = Field.put16(counter) + Field.put16(UInt16(cap.rawValue) | (rebuilt ? 0x8000 : 0)) + Field.put16(UInt16(balanceAfterRefill.rawValue))
            + Field.put32(reference) + Field.put16(terminal)
        return body + CardMAC.compute(key: macKey, uid: uid, block: Self.block, record: body, value: Int32(balance.rawValue))
    }

    public static func vouches(_ block: [UInt8], for balance: Int32, uid: [UInt8], macKey: SymmetricKey) -> Bool {
        guard block.count == 16 else { return false }
        return CardMAC.matches(Array(block[12..<16]), CardMAC.compute(key: macKey, uid: uid, block: Self.block, record: Array(block[0..<12]), value: balance))
    }

    /// Decodes a record already shown to vouch for a balance.
    public init(block: [UInt8]) {
        counter = Field.u16(block, 0)
        cap = Fen(Int(Field.u16(block, 2) & 0x7FFF))
        rebuilt = Field.u16(block, 2) & 0x8000 != 0
        balanceAfterRefill = Fen(Int(Field.u16(block, 4)))
        reference = Field.u32(block, 6)
        terminal = Field.u16(block, 10)
    }
}
