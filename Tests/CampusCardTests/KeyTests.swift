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
        #expect(CardMAC.matches(mac, mac))
        var tampered = mac
        tampered[0] ^= 1
        #expect(!CardMAC.matches(tampered, mac))
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

    @Test func refusesGroupOrWorldReadable() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try FileKeystore.create(path: path)
        for mode in [0o640, 0o604, 0o660] {
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
            let error = #expect(throws: KeystoreError.self) { try FileKeystore(path: path) }
            #expect(error?.code == .tooOpen)
            #expect(error?.message.contains("chmod 600") == true)
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
