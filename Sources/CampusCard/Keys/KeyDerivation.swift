import Crypto
import CryptoExtras
import MifareClassic

/// What a diversified key is for. Value blocks use access condition 110: the terminal key (key A) reads and
/// decrements, the loader key (key B) increments and writes. The MAC key never goes onto the card.
public enum KeyRole: String, Sendable, Hashable, Codable, CaseIterable {
    /// Key A of our sectors: every terminal (canteen POS, water controller) holds its master.
    case terminal
    /// Key B of our sectors: only loading and settlement stations hold its master.
    case loader
    /// The AES key of the card's MACs: every terminal holds its master; it never leaves the box or the SAM.
    case mac

    var code: UInt8 {
        switch self {
        case .terminal: return 0x0A
        case .loader: return 0x0B
        case .mac: return 0x4D
        }
    }
}

/// A 128-bit master key. Its description never shows the key.
public struct MasterKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    let key: SymmetricKey

    /// A master from 16 bytes; `nil` for any other length.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        key = SymmetricKey(data: bytes)
    }

    /// A fresh random master (swift-crypto's secure random generator).
    public static func random() -> MasterKey { MasterKey(key: SymmetricKey(size: .bits128)) }

    init(key: SymmetricKey) { self.key = key }

    /// The raw bytes, for writing the keystore file only.
    var bytes: [UInt8] { key.withUnsafeBytes { Array($0) } }

    /// The master's id: the first 4 bytes of AES-CMAC(master, "OneCard key id"), in hex. Not secret (a CMAC output
    /// reveals nothing usable about a 128-bit key); it lets an operator check that two boxes hold the same master
    /// (a POS keystore exported from the card office's) without showing either key.
    public var id: String {
        KeyDerivation.cmac(key, Array("OneCard key id".utf8), outputSize: 4).map { ($0 < 0x10 ? "0" : "") + String($0, radix: 16, uppercase: true) }.joined()
    }

    public var description: String { "<master key redacted>" }
    public var debugDescription: String { description }
}

/// Per-card, per-sector key diversification in the manner of NXP AN10922 (AES-128):
/// `CMAC(master, 0x01 || M)` with `M` exactly 31 bytes, so `0x01 || M` is two whole AES blocks and AN10922's
/// padding rule reduces to plain CMAC (subkey K1) — no hand-written primitive is needed.
///
/// `M` = UID (7 bytes, a 4-byte NUID zero-padded on the right) || sector || role code || key version ||
/// the 21-byte system identifier "OneCard campus v1 AN2" (ASCII). A MIFARE key is the first 6 bytes.
public enum KeyDerivation {
    static let systemIdentifier = Array("OneCard campus v1 AN2".utf8)

    /// The 32-byte diversification input `0x01 || M`.
    public static func input(uid: [UInt8], sector: UInt8, role: KeyRole, version: UInt8) -> [UInt8] {
        precondition(uid.count == 4 || uid.count == 7, "a MIFARE UID is 4 or 7 bytes")
        let paddedUID = uid + [UInt8](repeating: 0, count: 7 - uid.count)
        let input = [0x01] + paddedUID + [sector, role.code, version] + systemIdentifier
        assert(input.count == 32)
        return input
    }

    /// The full 16-byte diversified AES key.
    public static func diversify(_ master: MasterKey, uid: [UInt8], sector: UInt8, role: KeyRole, version: UInt8) -> SymmetricKey {
        SymmetricKey(data: cmac(master.key, input(uid: uid, sector: sector, role: role, version: version)))
    }

    /// The MIFARE key of `sector` for `role` (terminal = key A, loader = key B): the diversified key's first 6 bytes.
    public static func sectorKey(_ master: MasterKey, uid: [UInt8], sector: Int, role: KeyRole, version: UInt8) -> MifareKey {
        precondition(role != .mac, "the MAC key never goes onto the card")
        let full = cmac(master.key, input(uid: uid, sector: UInt8(sector), role: role, version: version))
        return MifareKey(bytes: Array(full.prefix(6)))!
    }

    /// The card's MAC key (sector byte FF: not a sector).
    public static func macKey(_ master: MasterKey, uid: [UInt8], version: UInt8) -> SymmetricKey {
        diversify(master, uid: uid, sector: 0xFF, role: .mac, version: version)
    }

    /// AES-128-CMAC (RFC 4493) from swift-crypto's CryptoExtras.
    public static func cmac(_ key: SymmetricKey, _ message: [UInt8], outputSize: Int = 16) -> [UInt8] {
        // The only failures are a key that is not 128/192/256 bits or an output size outside 0...16: programmer errors.
        var mac = try! AES.CMAC(key: key, outputSize: outputSize)
        mac.update(data: message)
        return Array(mac.finalize())
    }
}

/// The MAC that binds a card record to the card: AES-CMAC under the card's MAC key over
/// UID || block number || the record's bytes (its MAC field excluded) || the value it vouches for, truncated.
public enum CardMAC {
    /// Bytes of MAC stored on the card.
    public static let length = 4

    public static func compute(key: SymmetricKey, uid: [UInt8], block: Int, record: [UInt8], value: Int32? = nil) -> [UInt8] {
        var message = uid + [UInt8(truncatingIfNeeded: block)] + record
        if let value {
            let raw = UInt32(bitPattern: value)
            message += [UInt8(raw >> 24), UInt8(raw >> 16 & 0xFF), UInt8(raw >> 8 & 0xFF), UInt8(raw & 0xFF)]
        }
        return KeyDerivation.cmac(key, message, outputSize: length)
    }

    /// Constant-time comparison of a stored MAC with the expected one.
    public static func matches(_ stored: [UInt8], _ expected: [UInt8]) -> Bool {
        guard stored.count == expected.count else { return false }
        return zip(stored, expected).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
