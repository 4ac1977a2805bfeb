import CampusCard
import Crypto
import Foundation
import MifareClassic
import Testing

func vectorFile(_ name: String) throws -> [String: Any] {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Vectors"))
    return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
}

func bytes(_ hex: String) -> [UInt8] {
    stride(from: 0, to: hex.count, by: 2).map { i in
        let start = hex.index(hex.startIndex, offsetBy: i)
        return UInt8(hex[start..<hex.index(start, offsetBy: 2)], radix: 16)!
    }
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02X", $0) }.joined() }

@Suite struct CMACVectorTests {
    @Test func rfc4493() throws {
        let file = try vectorFile("rfc4493")
        let keyHex = try #require(file["key"] as? String)
        let key = SymmetricKey(data: bytes(keyHex))
        let cases = try #require(file["cases"] as? [[String: String]])
        #expect(cases.count == 4)
        for testCase in cases {
            #expect(hex(KeyDerivation.cmac(key, bytes(testCase["message"]!))) == testCase["mac"])
        }
    }
}

@Suite struct DerivationVectorTests {
    /// Vectors computed by scripts/make-derivation-vectors.py with Python's `cryptography`, not by our code.
    @Test func keysMatchTheIndependentImplementation() throws {
        let file = try vectorFile("derivation")
        let masterHex = try #require(file["master"] as? String)
        let master = try #require(MasterKey(bytes: bytes(masterHex)))
        let keys = try #require(file["keys"] as? [[String: Any]])
        #expect(keys.count == 10)
        for vector in keys {
            let uid = bytes(vector["uid"] as! String)
            let sector = vector["sector"] as! Int, version = UInt8(vector["version"] as! Int)
            let role = try #require(KeyRole(rawValue: vector["role"] as! String))
            #expect(hex(KeyDerivation.input(uid: uid, sector: UInt8(sector), role: role, version: version)) == vector["input"] as? String)
            let key = KeyDerivation.sectorKey(master, uid: uid, sector: sector, role: role, version: version)
            #expect(hex(key.bytes) == vector["mifareKey"] as? String, "\(vector)")
        }
    }

    @Test func macMatchesTheIndependentImplementation() throws {
        let file = try vectorFile("derivation")
        let master = try #require(MasterKey(bytes: bytes(file["master"] as! String)))
        let vector = try #require(file["mac"] as? [String: Any])
        let uid = bytes(vector["uid"] as! String)
        let macKey = KeyDerivation.macKey(master, uid: uid, version: 1)
        #expect(macKey.withUnsafeBytes { hex(Array($0)) } == vector["macKey"] as? String)
        let mac = CardMAC.compute(key: macKey, uid: uid, block: vector["block"] as! Int, record: bytes(vector["record"] as! String),
                                  value: Int32(vector["value"] as! Int))
        #expect(hex(mac) == vector["mac"] as? String)
        // `matches` against the independent MAC: equal bytes match; any changed byte, a prefix or a longer value do not.
        let stored = bytes(try #require(vector["mac"] as? String))
        #expect(stored.count == CardMAC.length)
        #expect(CardMAC.matches(stored, mac))
        for index in stored.indices {
            var tampered = stored
            tampered[index] ^= 0x01
            #expect(!CardMAC.matches(tampered, mac), "byte \(index) changed")
        }
        #expect(!CardMAC.matches(Array(stored.prefix(3)), mac) && !CardMAC.matches(stored + [0], mac) && !CardMAC.matches([], mac))
    }

    @Test func everyInputChangesTheKey() {
        let master = MasterKey.random()
        let base = KeyDerivation.sectorKey(master, uid: [1, 2, 3, 4], sector: 2, role: .terminal, version: 1)
        #expect(KeyDerivation.sectorKey(master, uid: [1, 2, 3, 5], sector: 2, role: .terminal, version: 1) != base)
        #expect(KeyDerivation.sectorKey(master, uid: [1, 2, 3, 4], sector: 3, role: .terminal, version: 1) != base)
        #expect(KeyDerivation.sectorKey(master, uid: [1, 2, 3, 4], sector: 2, role: .loader, version: 1) != base)
        #expect(KeyDerivation.sectorKey(master, uid: [1, 2, 3, 4], sector: 2, role: .terminal, version: 2) != base)
        #expect(KeyDerivation.sectorKey(MasterKey.random(), uid: [1, 2, 3, 4], sector: 2, role: .terminal, version: 1) != base)
        #expect("\(master)" == "<master key redacted>")
    }
}

@Suite struct FileKeystoreTests {
    func temporaryPath() -> String { NSTemporaryDirectory() + "keystore-\(UUID().uuidString).json" }

    @Test func createIsPrivateAndLoads() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let keystore = try FileKeystore.create(path: path)
        let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
        #expect(mode == 0o600)
        #expect(keystore.currentVersion == 1 && keystore.knownVersions == [1])
        #expect(keystore.roles(version: 1) == [.terminal, .loader, .mac])
        let reloaded = try FileKeystore(path: path)
        let uid: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]
        #expect(try reloaded.sectorKey(uid: uid, sector: 2, role: .terminal, version: 1) == keystore.sectorKey(uid: uid, sector: 2, role: .terminal, version: 1))
        #expect("\(reloaded)".contains("versions 1 (loader+mac+terminal)"))
        #expect(throws: KeystoreError.self) { try FileKeystore.create(path: path) }  // never overwrites
        // No master's hex appears in what the keystore says about itself or in its errors.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let masters = text.matches(of: #/"([0-9A-F]{32})"/#).map { String($0.1) }
        #expect(masters.count == 3)
        let error = #expect(throws: KeystoreError.self) { try reloaded.macKey(uid: uid, version: 7) }
        for master in masters {
            #expect(!"\(reloaded)".contains(master) && !(error?.message.contains(master) ?? true))
        }
    }

    /// Each of the six group and other permission bits alone is refused; owner-only modes 600 and 400 load.
    @Test func refusesEveryGroupOrOtherPermissionBit() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try FileKeystore.create(path: path)
        for bit in [0o040, 0o020, 0o010, 0o004, 0o002, 0o001] {
            try FileManager.default.setAttributes([.posixPermissions: 0o600 | bit], ofItemAtPath: path)
            let error = #expect(throws: KeystoreError.self, "mode \(String(0o600 | bit, radix: 8))") { try FileKeystore(path: path) }
            #expect(error?.code == .tooOpen)
            #expect(error?.message.contains("chmod 600") == true)
        }
        for mode in [0o600, 0o400] {
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
            #expect(try FileKeystore(path: path).knownVersions == [1], "mode \(String(mode, radix: 8))")
        }
    }

    @Test func refusesMalformedFilesAndUnknownVersions() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        for text in ["not json", #"{"format":"other","currentVersion":1,"versions":[]}"#,
                     #"{"format":"onecard-keystore-v1","currentVersion":2,"versions":[{"version":1,"created":"x","masters":{"terminal":"00112233445566778899AABBCCDDEEFF","mac":"00112233445566778899AABBCCDDEEFF"}}]}"#,
                     #"{"format":"onecard-keystore-v1","currentVersion":1,"versions":[{"version":1,"created":"x","masters":{"terminal":"0011"}}]}"#] {
            try? FileManager.default.removeItem(atPath: path)
            _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
            let error = #expect(throws: KeystoreError.self) { try FileKeystore(path: path) }
            #expect(error?.code == .malformed)
        }
        // A POS keystore: no loader master, and version 1 only.
        try? FileManager.default.removeItem(atPath: path)
        let pos = try FileKeystore.create(path: path, roles: [.terminal, .mac])
        let missing = #expect(throws: KeystoreError.self) { try pos.sectorKey(uid: [1, 2, 3, 4], sector: 1, role: .loader, version: 1) }
        #expect(missing?.code == .missingRole)
        let unknown = #expect(throws: KeystoreError.self) { try pos.macKey(uid: [1, 2, 3, 4], version: 9) }
        #expect(unknown?.code == .unknownVersion)
        #expect(throws: KeystoreError.self) { try FileKeystore(path: path + ".missing") }
    }
}

@Suite struct KeyIDTests {
    /// Ids computed by Python's `cryptography` (see the file's "source"), not by our code.
    @Test func idsMatchTheIndependentImplementation() throws {
        let cases = try #require(try vectorFile("key-ids")["cases"] as? [[String: String]])
        #expect(cases.count == 3)
        for vector in cases {
            let masterHex = try #require(vector["master"])
            let master = try #require(MasterKey(bytes: bytes(masterHex)))
            #expect(master.id == vector["id"])
            #expect(!"\(master)".contains(masterHex))
        }
        #expect(MasterKey.random().id != MasterKey.random().id)
    }
}

@Suite struct KeystoreFileHandlingTests {
    /// A fresh private directory per test, so leftovers (temporary files) can be seen.
    func directory() throws -> String {
        let path = NSTemporaryDirectory() + "keystore-dir-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    func write(_ text: String, to path: String) {
        try? FileManager.default.removeItem(atPath: path)
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
    }

    @Test func refusesSignedOrSpacedHexAndDuplicateVersions() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/keystore.json"
        let good = "00112233445566778899AABBCCDDEEFF"
        func file(terminal: String, versions: [Int] = [1]) -> String {
            let entries = versions.map { #"{"version":\#($0),"created":"x","masters":{"terminal":"\#(terminal)","mac":"\#(good)"}}"# }
            return #"{"format":"onecard-keystore-v1","currentVersion":1,"versions":[\#(entries.joined(separator: ","))]}"#
        }
        write(file(terminal: good), to: path)
        #expect(try FileKeystore(path: path).knownVersions == [1])
        // Integer parsing would take "+F" as 0F and "-0" as 00: a master must be exactly 32 hex digits.
        for bad in [String(repeating: "+F", count: 16), String(repeating: "-0", count: 16), " " + good.dropFirst(), "0x" + good.dropFirst(2), good + "00"] {
            write(file(terminal: bad), to: path)
            let error = #expect(throws: KeystoreError.self) { try FileKeystore(path: path) }
            #expect(error?.code == .malformed, "\(bad)")
            #expect(error?.message.contains(bad) == false, "the bad value is not echoed")
        }
        write(file(terminal: good, versions: [1, 1]), to: path)
        let duplicate = #expect(throws: KeystoreError.self) { try FileKeystore(path: path) }
        #expect(duplicate?.code == .malformed && duplicate?.message.contains("twice") == true)
    }

    @Test func refusesWhatIsNotARegularFile() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: dir)
        let error = #expect(throws: KeystoreError.self) { try FileKeystore(path: dir) }
        #expect(error?.code == .unreadable && error?.message.contains("not a regular file") == true)
        let missing = #expect(throws: KeystoreError.self) { try FileKeystore(path: dir + "/none.json") }
        #expect(missing?.message.contains("cardctl keystore create") == true)
    }

    @Test func createAndRotateLeaveOnlyThePrivateFile() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/keystore.json"
        let created = try FileKeystore.create(path: path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["keystore.json"])
        let refused = #expect(throws: KeystoreError.self) { try FileKeystore.create(path: path) }
        #expect(refused?.code == .exists)
        #expect(try FileKeystore(path: path).keyID(role: .mac, version: 1) == created.keyID(role: .mac, version: 1), "the refused create left the file alone")
        let rotated = try FileKeystore.rotate(path: path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["keystore.json"])
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
        #expect(rotated.knownVersions == [1, 2] && rotated.currentVersion == 2)
        for role in KeyRole.allCases {
            #expect(rotated.keyID(role: role, version: 1) == created.keyID(role: role, version: 1), "rotation keeps version 1's masters")
            #expect(rotated.keyID(role: role, version: 2) != created.keyID(role: role, version: 1))
        }
        let uid: [UInt8] = [4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66]
        #expect(try rotated.sectorKey(uid: uid, sector: 2, role: .loader, version: 1) == created.sectorKey(uid: uid, sector: 2, role: .loader, version: 1))
        #expect(throws: KeystoreError.self) { try FileKeystore.create(path: dir + "/absent/keystore.json") }
    }

    @Test func exportGivesATerminalTheSameMastersWithoutTheLoader() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let office = try FileKeystore.create(path: dir + "/office.json")
        try FileKeystore.rotate(path: office.path)
        let full = try FileKeystore(path: office.path)
        let pos = try FileKeystore.export(from: full.path, to: dir + "/pos.json", roles: [.terminal, .mac])
        #expect(try FileManager.default.attributesOfItem(atPath: pos.path)[.posixPermissions] as? Int == 0o600)
        #expect(pos.knownVersions == [1, 2] && pos.currentVersion == 2)
        let uid: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]
        for version: UInt8 in [1, 2] {
            #expect(pos.roles(version: version) == [.terminal, .mac])
            #expect(try pos.sectorKey(uid: uid, sector: 3, role: .terminal, version: version) == full.sectorKey(uid: uid, sector: 3, role: .terminal, version: version))
            #expect(try pos.macKey(uid: uid, version: version) == full.macKey(uid: uid, version: version))
            #expect(pos.keyID(role: .terminal, version: version) == full.keyID(role: .terminal, version: version))
            #expect(pos.keyID(role: .loader, version: version) == nil)
        }
        let noLoader = #expect(throws: KeystoreError.self) { try pos.sectorKey(uid: uid, sector: 3, role: .loader, version: 2) }
        #expect(noLoader?.code == .missingRole)
        // The exported file holds exactly the two masters per version, and its description shows ids, never masters.
        let text = try String(contentsOfFile: pos.path, encoding: .utf8)
        let masters = text.matches(of: #/"([0-9A-F]{32})"/#).map { String($0.1) }
        #expect(masters.count == 4)
        let macID = try #require(full.keyID(role: .mac, version: 1))
        #expect("\(pos)".contains("ids 1/mac \(macID)"))
        for master in masters { #expect(!"\(pos)".contains(master)) }
        // Refusals: a terminal without the MAC role, a role the source lacks, an existing destination.
        #expect(#expect(throws: KeystoreError.self) { try FileKeystore.export(from: full.path, to: dir + "/x.json", roles: [.terminal]) }?.code == .missingRole)
        #expect(#expect(throws: KeystoreError.self) { try FileKeystore.export(from: pos.path, to: dir + "/y.json", roles: Set(KeyRole.allCases)) }?.code == .missingRole)
        #expect(#expect(throws: KeystoreError.self) { try FileKeystore.export(from: full.path, to: pos.path, roles: [.terminal, .mac]) }?.code == .exists)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["office.json", "pos.json"])
    }
}
