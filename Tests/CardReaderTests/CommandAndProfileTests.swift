import CardReader
import MifareClassic
import SmartCard
import Testing

/// The command bytes, checked against the byte strings of the vendor documents (see HardwareNotes.md).
@Suite struct StorageCardCommandTests {
    let key = MifareKey(hex: "A0A1A2A3A4A5")!

    @Test func partThreeCommands() {
        #expect(StorageCardCommand.getUID.bytes == [0xFF, 0xCA, 0x00, 0x00, 0x00])
        #expect(StorageCardCommand.loadKey(key, slot: 1, structure: 0x00).bytes
                == [0xFF, 0x82, 0x00, 0x01, 0x06, 0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5])
        #expect(StorageCardCommand.authenticate(block: 7, keyType: .b, slot: 1).bytes
                == [0xFF, 0x86, 0x00, 0x00, 0x05, 0x01, 0x00, 0x07, 0x61, 0x01])
        #expect(StorageCardCommand.read(block: 4).bytes == [0xFF, 0xB0, 0x00, 0x04, 0x10])
        let data = [UInt8](0..<16)
        #expect(StorageCardCommand.update(block: 5, data: data).bytes == [0xFF, 0xD6, 0x00, 0x05, 0x10] + data)
    }

    @Test func acsValueCommandsAreBigEndian() {
        #expect(StorageCardCommand.acsValue(.decrement, block: 9, value: 0x0102_0304).bytes
                == [0xFF, 0xD7, 0x00, 0x09, 0x05, 0x02, 0x01, 0x02, 0x03, 0x04])
        #expect(StorageCardCommand.acsValue(.increment, block: 9, value: 1).bytes
                == [0xFF, 0xD7, 0x00, 0x09, 0x05, 0x01, 0x00, 0x00, 0x00, 0x01])
        #expect(StorageCardCommand.acsReadValue(block: 9).bytes == [0xFF, 0xB1, 0x00, 0x09, 0x04])
        #expect(StorageCardCommand.acsRestore(from: 9, to: 10).bytes == [0xFF, 0xD7, 0x00, 0x09, 0x02, 0x03, 0x0A])
    }

    @Test func omnikeyValueCommandsAreLittleEndian() {
        #expect(StorageCardCommand.omnikeyIncrement(block: 8, by: 0x0102_0304).bytes
                == [0xFF, 0xD4, 0x00, 0x08, 0x04, 0x04, 0x03, 0x02, 0x01])
        #expect(StorageCardCommand.omnikeyDecrement(block: 8, by: 250).bytes
                == [0xFF, 0xD8, 0x00, 0x08, 0x04, 0xFA, 0x00, 0x00, 0x00])
    }
}

@Suite struct ReaderProfileTests {
    @Test(arguments: [
        ("ACS ACR122U PICC Interface 00 00", ReaderKind.acr122u),
        ("ACS ACR1252 1S CL Reader [ACR1252 Dual Reader PICC] 00 00", .acr1252u),
        ("HID Global OMNIKEY 5422 Smartcard Reader [OMNIKEY 5422CL Smartcard Reader] 01 00", .omnikey5422),
    ])
    func profileFromReaderName(name: String, kind: ReaderKind) {
        #expect(ReaderProfile.matching(readerName: name)?.kind == kind)
    }

    @Test func virtualAndUnknownReadersSayNothing() {
        #expect(ReaderProfile.matching(readerName: "Virtual PCD 00 00") == nil)
        #expect(ReaderProfile.matching(readerName: "HID Global OMNIKEY 3x21 Smart Card Reader 00 00") == nil)
    }

    @Test func capabilities() {
        #expect(ReaderProfile.acr122u.hasNativeValueOperations)
        #expect(ReaderProfile.acr122u.keysAreVolatile && ReaderProfile.acr122u.keySlots == 2)
        #expect(!ReaderProfile.omnikey5422.keysAreVolatile && ReaderProfile.omnikey5422.keySlots == 32)
        #expect(!ReaderProfile.generic.hasNativeValueOperations)
        for kind in ReaderKind.allCases { #expect(ReaderProfile.profile(for: kind).kind == kind) }
    }
}
