import SmartCard
import MifareClassic

/// The PC/SC Part 3 storage-card pseudo-APDUs (CLA FF) and the vendors' value-block commands, as bytes.
/// Pure builders: no I/O. Sources: PC/SC Part 3, ACS API-ACR122U v2.04, HID OMNIKEY sample code
/// (see HardwareNotes.md).
public enum StorageCardCommand {
    /// GET DATA: the card's UID (`FF CA 00 00 00`).
    public static let getUID = CommandAPDU(cla: 0xFF, ins: 0xCA, p1: 0x00, p2: 0x00, le: 0x00)

    /// LOAD KEYS into a reader key slot: `FF 82 KS KN 06 key`.
    public static func loadKey(_ key: MifareKey, slot: Int, structure: UInt8) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0x82, p1: structure, p2: UInt8(slot), data: key.bytes)
    }

    /// GENERAL AUTHENTICATE with a loaded key: `FF 86 00 00 05 01 00 BLK KT KN`.
    public static func authenticate(block: Int, keyType: KeyType, slot: Int) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0x86, p1: 0x00, p2: 0x00,
                    data: [0x01, 0x00, UInt8(block), keyType.authenticationCode, UInt8(slot)])
    }

    /// READ BINARY of one 16-byte block: `FF B0 00 BLK 10`.
    public static func read(block: Int) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0xB0, p1: 0x00, p2: UInt8(block), le: 0x10)
    }

    /// READ BINARY of `count` consecutive data blocks from `block` (ACS Multiple Blocks Mode): `FF B0 00 BLK 16·count`.
    public static func read(block: Int, count: Int) -> CommandAPDU {
        precondition((1...15).contains(count), "one READ BINARY returns 1 to 15 blocks")
        return CommandAPDU(cla: 0xFF, ins: 0xB0, p1: 0x00, p2: UInt8(block), le: UInt8(16 * count))
    }

    /// UPDATE BINARY of one 16-byte block: `FF D6 00 BLK 10 data`.
    public static func update(block: Int, data: [UInt8]) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0xD6, p1: 0x00, p2: UInt8(block), data: data)
    }

    // MARK: ACS (ACR122U, ACR1252U)

    /// ACS value operation codes for `FF D7`.
    public enum ACSValueOperation: UInt8 {
        case store = 0x00, increment = 0x01, decrement = 0x02
    }

    /// ACS value block operation + transfer into the same block: `FF D7 00 BLK 05 OP value(4, MSB first)`.
    public static func acsValue(_ operation: ACSValueOperation, block: Int, value: Int32) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0xD7, p1: 0x00, p2: UInt8(block), data: [operation.rawValue] + bigEndian(value))
    }

    /// ACS read value block: `FF B1 00 BLK 04` (answers the value MSB first).
    public static func acsReadValue(block: Int) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0xB1, p1: 0x00, p2: UInt8(block), le: 0x04)
    }

    /// ACS restore + transfer (copy a value block within a sector): `FF D7 00 SRC 02 03 DST`.
    public static func acsRestore(from source: Int, to destination: Int) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0xD7, p1: 0x00, p2: UInt8(source), data: [0x03, UInt8(destination)])
    }

    // MARK: HID OMNIKEY 5x22

    /// OMNIKEY increment + transfer: `FF D4 00 BLK 04 value(LSB first)`.
    public static func omnikeyIncrement(block: Int, by amount: Int32) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0xD4, p1: 0x00, p2: UInt8(block), data: littleEndian(amount))
    }

    /// OMNIKEY decrement + transfer: `FF D8 00 BLK 04 value(LSB first)`.
    public static func omnikeyDecrement(block: Int, by amount: Int32) -> CommandAPDU {
        CommandAPDU(cla: 0xFF, ins: 0xD8, p1: 0x00, p2: UInt8(block), data: littleEndian(amount))
    }

    static func bigEndian(_ value: Int32) -> [UInt8] {
        let v = UInt32(bitPattern: value)
        return [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
    }

    static func littleEndian(_ value: Int32) -> [UInt8] { bigEndian(value).reversed() }
}
