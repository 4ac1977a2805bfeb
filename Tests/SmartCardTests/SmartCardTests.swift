import SmartCard
import Testing

@Suite struct CommandAPDUTests {
    @Test func isoCases() {
        // Case 1: header only; case 2: Le; case 3: Lc + data; case 4: Lc + data + Le.
        #expect(CommandAPDU(cla: 0xFF, ins: 0xCA, p1: 0, p2: 0).bytes == [0xFF, 0xCA, 0x00, 0x00])
        #expect(CommandAPDU(cla: 0xFF, ins: 0xCA, p1: 0, p2: 0, le: 0).bytes == [0xFF, 0xCA, 0x00, 0x00, 0x00])
        #expect(CommandAPDU(cla: 0xFF, ins: 0xD6, p1: 0, p2: 4, data: [1, 2]).bytes == [0xFF, 0xD6, 0x00, 0x04, 0x02, 0x01, 0x02])
        #expect(CommandAPDU(cla: 0x00, ins: 0xA4, p1: 4, p2: 0, data: [0xA0], le: 0).bytes == [0x00, 0xA4, 0x04, 0x00, 0x01, 0xA0, 0x00])
    }

    @Test(arguments: [
        [UInt8]([0xFF, 0xCA, 0x00, 0x00]),
        [0xFF, 0xCA, 0x00, 0x00, 0x00],
        [0xFF, 0x82, 0x00, 0x01, 0x06, 1, 2, 3, 4, 5, 6],
        [0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x01, 0x00],
    ])
    func parseRoundTrips(bytes: [UInt8]) throws {
        let apdu = try #require(CommandAPDU(bytes: bytes))
        #expect(apdu.bytes == bytes)
    }

    @Test func malformedCommandsAreRejected() {
        #expect(CommandAPDU(bytes: [0xFF, 0xCA]) == nil)
        #expect(CommandAPDU(bytes: [0xFF, 0xD6, 0x00, 0x04, 0x05, 0x01]) == nil, "Lc says 5, one byte follows")
        #expect(CommandAPDU(bytes: [0xFF, 0xD6, 0x00, 0x04, 0x00, 0x01]) == nil, "Lc 0 with data")
    }
}

@Suite struct ResponseAndStatusTests {
    @Test func responseSplitsDataAndStatusWord() throws {
        let response = try #require(ResponseAPDU(bytes: [0xDE, 0xAD, 0x90, 0x00]))
        #expect(response.data == [0xDE, 0xAD])
        #expect(response.statusWord.isSuccess)
        #expect(response.bytes == [0xDE, 0xAD, 0x90, 0x00])
        #expect(ResponseAPDU(bytes: [0x90]) == nil)
    }

    @Test func statusWords() {
        #expect(StatusWord(sw1: 0x63, sw2: 0x00) == .operationFailed)
        #expect(StatusWord.authenticationFailed.description == "69 83")
        #expect(StatusWord(rawValue: 0x6C10).correctLength == 0x10)
        #expect(StatusWord.success.correctLength == nil)
        for sw in [StatusWord.success, .operationFailed, .securityStatusNotSatisfied, .authenticationFailed, .functionNotSupported, .blockNotFound] {
            #expect(!sw.meaning.isEmpty)
        }
        #expect(StatusWord.securityStatusNotSatisfied.meaning != StatusWord.authenticationFailed.meaning)
    }

    @Test func hex() {
        #expect(Hex.encode([0x00, 0xAB, 0xFF]) == "00ABFF")
        #expect(Hex.encode([0x3B, 0x8F], separator: " ") == "3B 8F")
        #expect(Hex.decode("de:ad be-ef") == [0xDE, 0xAD, 0xBE, 0xEF])
        #expect(Hex.decode("ABC") == nil)
        #expect(Hex.decode("zz") == nil)
    }
}

@Suite struct ATRTests {
    /// The contactless storage-card ATRs of PC/SC Part 3 §3.1.3.2.3 (checksums computed by hand).
    @Test(arguments: [
        ("3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A", "MIFARE Classic 1K"),
        ("3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 02 00 00 00 00 69", "MIFARE Classic 4K"),
        ("3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 03 00 00 00 00 68", "MIFARE Ultralight"),
        ("3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 26 00 00 00 00 4D", "MIFARE Mini"),
    ])
    func knownCards(hex: String, name: String) throws {
        let atr = ATR(bytes: try #require(Hex.decode(hex)))
        #expect(atr.cardName.description == name)
        #expect(atr.checksumIsValid)
        #expect(atr.standard == 0x03)
    }

    @Test func othersAreNamedAsSuch() throws {
        let other = ATR(bytes: try #require(Hex.decode("3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 3A 00 00 00 00 51")))
        #expect(other.cardName == .otherStorageCard(0x003A))
        let contact = ATR(bytes: try #require(Hex.decode("3B 6E 00 00 80 31 80 66 B0 84 12 01 6E 01 83 00 90 00")))
        #expect(contact.cardName == .notStorageCard)
        #expect(contact.standard == nil)
    }

    @Test func builtATRsMatchTheStandardOnes() {
        #expect(ATR.storageCard(nameCode: 0x0001).description == "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A")
        var broken = ATR.storageCard(nameCode: 0x0001).bytes
        broken[19] ^= 1
        #expect(!ATR(bytes: broken).checksumIsValid)
    }
}

@Suite struct RedactionTests {
    /// A LOAD KEYS command's description (what any log or trace prints) never shows the key.
    @Test func loadKeysDataIsMasked() {
        let load = CommandAPDU(cla: 0xFF, ins: 0x82, p1: 0x00, p2: 0x01, data: [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5])
        #expect(load.carriesKey)
        #expect(load.description == "FF 82 00 01 06 ** ** ** ** ** **")
        #expect("\(load)".contains("A0") == false && "\([load])".contains("A1") == false)
        let read = CommandAPDU(cla: 0xFF, ins: 0xB0, p1: 0x00, p2: 0x04, le: 0x10)
        #expect(!read.carriesKey && read.description == "FF B0 00 04 10")
        var dumped = ""
        dump(load, to: &dumped)
        #expect(!dumped.contains("160") && !dumped.contains("A0") && dumped.contains("**"), "\(dumped)")
    }

    /// A sector trailer write carries key A and key B: both masked, the access bytes shown. Data blocks are not masked.
    @Test func trailerWritesAreMasked() {
        let trailer: [UInt8] = [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xFF, 0x07, 0x80, 0x69, 0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5]
        for block: UInt8 in [3, 11, 127, 143, 255] {
            let write = CommandAPDU(cla: 0xFF, ins: 0xD6, p1: 0x00, p2: block, data: trailer)
            #expect(write.carriesKey, "block \(block)")
            #expect(write.description.hasSuffix("** ** ** ** ** ** FF 07 80 69 ** ** ** ** ** **"), "\(write)")
        }
        for block: UInt8 in [4, 128, 142] {
            #expect(!CommandAPDU(cla: 0xFF, ins: 0xD6, p1: 0x00, p2: block, data: trailer).carriesKey, "block \(block)")
        }
    }
}
