import CampusCard
import MifareClassic
import Testing

@Suite struct MADTests {
    /// Sector 0 of an NFC Forum formatted MIFARE Classic 1K (every sector NDEF, AID E103), as found in NDEF dumps.
    let nfcForumBlocks: [UInt8] = [
        0x14, 0x01, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1,
        0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1, 0x03, 0xE1,
    ]

    @Test func decodesAForeignApplicationsMAD() throws {
        let mad = try MAD(blocks: nfcForumBlocks)
        #expect(mad.info == 0x01)
        #expect(mad.aids == Array(repeating: 0xE103, count: 15))
        #expect(mad.sectors(of: 0xE103) == Array(1...15))
        #expect(mad.blocks == nfcForumBlocks)
    }

    @Test func crcProtectsEveryByte() throws {
        for index in 1..<32 {
            var broken = nfcForumBlocks
            broken[index] ^= 0x40
            #expect(throws: MADError.self) { try MAD(blocks: broken) }
        }
        #expect(throws: MADError.self) { try MAD(blocks: [0x00]) }
    }

    @Test func roundTripsOurLayout() throws {
        var aids = [UInt16](repeating: MAD.free, count: 15)
        aids[0] = 0x8D01
        aids[1] = 0x8D01
        let mad = MAD(aids: aids, info: 0)
        #expect(try MAD(blocks: mad.blocks) == mad)
        #expect(mad.sectors(of: 0x8D01) == [1, 2])
    }

    @Test func madSectorAccessIsTheStandardOne() {
        #expect(MAD.accessBits.bytes == [0x78, 0x77, 0x88])
    }
}
