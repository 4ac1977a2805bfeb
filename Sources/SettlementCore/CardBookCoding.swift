import CampusCard
import Foundation

/// A compact binary form of a card's two `WalletBook`s, for a store's one blob column per card: written for every
/// card a batch touches, so it avoids JSON (tens of microseconds a card) and stays a few dozen bytes.
///
/// Layout (little endian): version byte 1, then purse and water, each: has-highest u8, highest u16, seen u64,
/// reads u8 × (counter u16, balance i32), pending u16 × (terminal u16, sequence u32, kind u8, amount i64,
/// balance i64, counter u16, createdAt i64, flagged u8, merchant u16 + UTF-8), links u8 × (counter u16,
/// amount i64, reference u16 + UTF-8). Unknown versions and truncated input throw `SettlementError(.storage)`.
public enum CardBookCoding {
    static let version: UInt8 = 1
    static let kinds = TransactionIntent.Kind.allCases

    public static func encode(purse: WalletBook, water: WalletBook) -> [UInt8] {
        var out: [UInt8] = [version]
        out.reserveCapacity(64)
        write(purse, into: &out)
        write(water, into: &out)
        return out
    }

    public static func decode(_ bytes: [UInt8]) throws -> (purse: WalletBook, water: WalletBook) {
        var reader = Reader(bytes: bytes)
        guard try reader.u8() == version else { throw SettlementError(.storage, "a card book has an unknown format: the store was written by a newer version; upgrade settlementd") }
        let purse = try reader.wallet()
        let water = try reader.wallet()
        return (purse, water)
    }

    static func write(_ wallet: WalletBook, into out: inout [UInt8]) {
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) } }
        func putString(_ text: String) {
            let utf8 = Array(text.utf8.prefix(Int(UInt16.max)))
            put(UInt16(utf8.count))
            out.append(contentsOf: utf8)
        }
        put(UInt8(wallet.window.highest == nil ? 0 : 1))
        put(wallet.window.highest ?? 0)
        put(wallet.window.seen)
        // A card balance fits 32 bits (Fen.cardMaximum); a read that does not is not kept.
        let reads = wallet.reads.filter { Int32(exactly: $0.balanceBefore.rawValue) != nil }.suffix(255)
        put(UInt8(reads.count))
        for read in reads {
            put(read.counterBefore)
            put(Int32(read.balanceBefore.rawValue))
        }
        put(UInt16(min(wallet.pending.count, Int(UInt16.max))))
        for pending in wallet.pending.prefix(Int(UInt16.max)) {
            put(pending.terminalID.rawValue)
            put(pending.terminalSequence)
            put(UInt8(kinds.firstIndex(of: pending.kind) ?? 0))
            put(Int64(pending.amount.rawValue))
            put(Int64(pending.balanceBefore.rawValue))
            put(pending.counterBefore)
            put(Int64(pending.createdAt.timeIntervalSince1970.rounded(.down)))
            put(UInt8(pending.unresolvedFlagged ? 1 : 0))
            putString(pending.merchant)
        }
        put(UInt8(min(wallet.onlineLoads.count, 255)))
        for link in wallet.onlineLoads.prefix(255) {
            put(link.counterAfter)
            put(Int64(link.amount.rawValue))
            putString(link.reference)
        }
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func take<T: FixedWidthInteger>(_: T.Type) throws -> T {
            let size = MemoryLayout<T>.size
            guard offset + size <= bytes.count else { throw SettlementError(.storage, "a card book is truncated: the store is damaged; restore it from a backup") }
            var value: T = 0
            for index in 0..<size { value |= T(truncatingIfNeeded: bytes[offset + index]) << (8 * index) }
            offset += size
            return value
        }

        mutating func u8() throws -> UInt8 { try take(UInt8.self) }

        mutating func string() throws -> String {
            let count = Int(try take(UInt16.self))
            guard offset + count <= bytes.count else { throw SettlementError(.storage, "a card book is truncated: the store is damaged; restore it from a backup") }
            defer { offset += count }
            return String(decoding: bytes[offset..<offset + count], as: UTF8.self)
        }

        mutating func wallet() throws -> WalletBook {
            var wallet = WalletBook()
            let hasHighest = try u8() != 0
            let highest = try take(UInt16.self)
            wallet.window = CounterWindow(highest: hasHighest ? highest : nil, seen: try take(UInt64.self))
            for _ in 0..<Int(try u8()) {
                let counter = try take(UInt16.self)
                wallet.reads.append(CardRead(counterBefore: counter, balanceBefore: Fen(Int(try take(Int32.self)))))
            }
            for _ in 0..<Int(try take(UInt16.self)) {
                let terminal = TerminalID(try take(UInt16.self))
                let sequence = try take(UInt32.self)
                let kindIndex = Int(try u8())
                guard kindIndex < CardBookCoding.kinds.count else { throw SettlementError(.storage, "a card book names an unknown record kind: the store was written by a newer version; upgrade settlementd") }
                let amount = Fen(Int(try take(Int64.self)))
                let balance = Fen(Int(try take(Int64.self)))
                let counter = try take(UInt16.self)
                let created = Date(timeIntervalSince1970: TimeInterval(try take(Int64.self)))
                let flagged = try u8() != 0
                let merchant = try string()
                wallet.pending.append(PendingRecord(terminalID: terminal, terminalSequence: sequence, kind: CardBookCoding.kinds[kindIndex],
                                                    amount: amount, balanceBefore: balance, counterBefore: counter, merchant: merchant,
                                                    createdAt: created, unresolvedFlagged: flagged))
            }
            for _ in 0..<Int(try u8()) {
                let counter = try take(UInt16.self)
                let amount = Fen(Int(try take(Int64.self)))
                wallet.onlineLoads.append(OnlineLoadLink(counterAfter: counter, amount: amount, reference: try string()))
            }
            return wallet
        }
    }
}
