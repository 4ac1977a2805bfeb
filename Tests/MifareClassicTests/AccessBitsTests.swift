import MifareClassic
import Testing

/// MF1S50 Table 8 as printed (rows C1 C2 C3: read, write, increment, decrement/transfer/restore).
let datasheetDataTable = """
000 A|B A|B A|B A|B
010 A|B never never never
100 A|B B never never
110 A|B B B A|B
001 A|B never never A|B
011 B B never never
101 B never never never
111 never never never never
"""

/// MF1S50 Table 7 as printed (rows C1 C2 C3: key A read/write, access bits read/write, key B read/write).
let datasheetTrailerTable = """
000 never A A never A A
010 never never A never A never
100 never B A|B never never B
110 never never A|B never never never
001 never A A A A A
011 never B A|B B never B
101 never never A|B B never never
111 never never A|B never never never
"""

func permission(_ word: Substring) -> KeyPermission {
    switch word {
    case "A|B": return .either
    case "A": return .keyA
    case "B": return .keyB
    default: return .never
    }
}

func condition(_ bits: Substring) -> AccessCondition {
    let b = Array(bits)
    return AccessCondition(c1: b[0] == "1", c2: b[1] == "1", c3: b[2] == "1")
}

@Suite struct AccessBitsTests {
    @Test func transportBytes() throws {
        #expect(AccessBits.transport.bytes == [0xFF, 0x07, 0x80])
        #expect(try AccessBits(bytes: [0xFF, 0x07, 0x80]) == .transport)
        // Data 000 with trailer 011 ("key B writes the trailer") is the well-known 7F 07 88.
        #expect(AccessBits(data: .transportData, trailer: AccessCondition(code: 0b011)!).bytes == [0x7F, 0x07, 0x88])
    }

    @Test func everyCombinationRoundTrips() throws {
        for a in 0..<8 { for b in 0..<8 { for c in 0..<8 { for t in 0..<8 {
            let bits = AccessBits(groups: [a, b, c, t].map { AccessCondition(code: UInt8($0))! })
            #expect(try AccessBits(bytes: bits.bytes) == bits)
        } } } }
    }

    @Test func inconsistentBitsAreRefused() {
        // Flip each of the 24 bits of a valid encoding: every single flip breaks a bit/inverse pair.
        let valid = AccessBits.transport.bytes
        for byte in 0..<3 {
            for bit in 0..<8 {
                var broken = valid
                broken[byte] ^= 1 << bit
                #expect(throws: AccessBitsError.self) { try AccessBits(bytes: broken) }
            }
        }
        #expect(throws: AccessBitsError.self) { try AccessBits(bytes: [0, 0, 0]) }
    }

    @Test func dataTableMatchesDatasheet() {
        for line in datasheetDataTable.split(separator: "\n") {
            let words = line.split(separator: " ")
            let condition = condition(words[0])
            let expected = words[1...].map(permission)
            #expect(AccessBits.dataPermission(condition, .read) == expected[0], "read \(condition)")
            #expect(AccessBits.dataPermission(condition, .write) == expected[1], "write \(condition)")
            #expect(AccessBits.dataPermission(condition, .increment) == expected[2], "increment \(condition)")
            for op in [DataBlockOperation.decrement, .transfer, .restore] {
                #expect(AccessBits.dataPermission(condition, op) == expected[3], "\(op) \(condition)")
            }
        }
    }

    @Test func trailerTableMatchesDatasheet() {
        for line in datasheetTrailerTable.split(separator: "\n") {
            let words = line.split(separator: " ")
            let condition = condition(words[0])
            let p = words[1...].map(permission)
            #expect(AccessBits.trailerPermission(condition, .read, .keyA) == p[0])
            #expect(AccessBits.trailerPermission(condition, .write, .keyA) == p[1])
            #expect(AccessBits.trailerPermission(condition, .read, .accessBits) == p[2])
            #expect(AccessBits.trailerPermission(condition, .write, .accessBits) == p[3])
            #expect(AccessBits.trailerPermission(condition, .read, .keyB) == p[4])
            #expect(AccessBits.trailerPermission(condition, .write, .keyB) == p[5])
        }
    }

    @Test func readableKeyBCannotBeUsed() {
        // Trailer 001 (transport): key B readable, so key B may do nothing even where the data table says A|B.
        let transport = AccessBits.transport
        #expect(transport.keyBIsReadable)
        #expect(transport.permits(.read, group: 0, key: .a))
        #expect(!transport.permits(.read, group: 0, key: .b))
        #expect(!transport.permitsTrailer(.write, .keyB, key: .b))
        // Trailer 011: key B secret, so key B works.
        let valueSector = AccessBits(groups: [.transportData, .valueBlock, .valueBlock, AccessCondition(code: 0b011)!])
        #expect(!valueSector.keyBIsReadable)
        #expect(valueSector.permits(.increment, group: 1, key: .b))
        #expect(!valueSector.permits(.increment, group: 1, key: .a))
        #expect(valueSector.permits(.decrement, group: 1, key: .a))
        #expect(valueSector.permits(.write, group: 2, key: .b) && !valueSector.permits(.write, group: 2, key: .a))
    }

    @Test func mayKeyADecrementBlock9() {
        // The example: block 9 is group 1 of sector 2.
        let size = CardSize.classic1K
        #expect(size.sector(ofBlock: 9) == 2 && size.accessGroup(ofBlock: 9) == 1)
        let bits = AccessBits(groups: [.transportData, .valueBlock, .transportData, AccessCondition(code: 0b011)!])
        #expect(bits.permits(.decrement, group: size.accessGroup(ofBlock: 9), key: .a))
        #expect(!bits.permits(.increment, group: size.accessGroup(ofBlock: 9), key: .a))
    }

    @Test func wordsForPeople() {
        #expect(AccessBits.transport.describeGroup(0).contains("read A|B"))
        #expect(AccessBits.transport.describeGroup(3).contains("key B read A"))
    }
}
