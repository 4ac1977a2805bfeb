import MifareClassic
import Testing
import TestSupport

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
        for (condition, expected) in Datasheet.dataRows {
            #expect(AccessBits.dataPermission(condition, .read) == expected[0], "read \(condition)")
            #expect(AccessBits.dataPermission(condition, .write) == expected[1], "write \(condition)")
            #expect(AccessBits.dataPermission(condition, .increment) == expected[2], "increment \(condition)")
            for op in [DataBlockOperation.decrement, .transfer, .restore] {
                #expect(AccessBits.dataPermission(condition, op) == expected[3], "\(op) \(condition)")
            }
        }
    }

    @Test func trailerTableMatchesDatasheet() {
        for (condition, p) in Datasheet.trailerRows {
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
