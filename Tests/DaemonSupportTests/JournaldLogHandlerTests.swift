import Foundation
import Logging
import Testing
@testable import DaemonSupport
#if canImport(Glibc)
import Glibc
#endif

/// A pipe whose write end a handler logs to; `lines()` closes it and reads everything written.
final class CapturePipe: Sendable {
    let readEnd: Int32
    let writeEnd: Int32

    init() {
        var ends: [Int32] = [0, 0]
        _ = pipe(&ends)
        readEnd = ends[0]
        writeEnd = ends[1]
    }

    func text() -> String {
        close(writeEnd)
        return readAll()
    }

    /// Reads until every write end is closed.
    func readAll() -> String {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(readEnd, &buffer, buffer.count)
            guard count > 0 else { break }
            data += buffer[0..<count]
        }
        close(readEnd)
        return String(decoding: data, as: UTF8.self)
    }
}

@Suite struct JournaldLogHandlerTests {
    @Test func oneLinePerMessageWithPriorityLabelAndMetadata() {
        let pipe = CapturePipe()
        var logger = Logger(label: "cardd") { JournaldLogHandler(label: $0, fileDescriptor: pipe.writeEnd) }
        logger.logLevel = .trace
        logger[metadataKey: "reader.name"] = "ACS ACR122U 00 00"
        logger.trace("apdu", metadata: ["apdu": "FFCA000000"])
        logger.debug("polling")
        logger.info("card tapped", metadata: ["card.serial": "0A1B2C3D", "amount.fen": "250"])
        logger.notice("config reloaded")
        logger.warning("reader slow")
        logger.error("journal write failed\nsecond line", metadata: ["db.path": "/var/lib/onecard/journal.sqlite"])
        logger.critical("valve stuck", metadata: ["note": "say \"hi\""])
        let lines = pipe.text().split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines == [
            #"<7>cardd: apdu apdu=FFCA000000 reader.name="ACS ACR122U 00 00""#,
            #"<7>cardd: polling reader.name="ACS ACR122U 00 00""#,
            #"<6>cardd: card tapped amount.fen=250 card.serial=0A1B2C3D reader.name="ACS ACR122U 00 00""#,
            #"<5>cardd: config reloaded reader.name="ACS ACR122U 00 00""#,
            #"<4>cardd: reader slow reader.name="ACS ACR122U 00 00""#,
            #"<3>cardd: journal write failed\nsecond line db.path=/var/lib/onecard/journal.sqlite reader.name="ACS ACR122U 00 00""#,
            #"<2>cardd: valve stuck note="say \"hi\"" reader.name="ACS ACR122U 00 00""#,
            "",
        ])
    }

    @Test func levelFiltersAndProviderMetadata() {
        let pipe = CapturePipe()
        let provider = Logger.MetadataProvider { ["request.id": "7"] }
        var logger = Logger(label: "ctl") { JournaldLogHandler(label: $0, fileDescriptor: pipe.writeEnd, metadataProvider: provider) }
        logger.logLevel = .notice
        logger.info("dropped")
        logger.notice("kept", metadata: ["request.id": "8"])  // the message's own metadata wins
        #expect(pipe.text() == "<5>ctl: kept request.id=8\n")
    }

    @Test func secretsAreRedacted() {
        let pipe = CapturePipe()
        var logger = Logger(label: "cardd") { JournaldLogHandler(label: $0, fileDescriptor: pipe.writeEnd) }
        logger[metadataKey: "keystore.masterKey"] = "00112233445566778899AABBCCDDEEFF"
        logger.error("auth failed", metadata: [
            "card.keyA": "A0A1A2A3A4A5",
            "sector.key_b": "B0B1B2B3B4B5",
            "uplink.token": "eyJhbGciOi",
            "db.password": "hunter2",
            "derivation.seed": "5EED",
            "sector": "3",
            "mac": ["key": "FFFFFFFFFFFF", "length": "4"],
        ])
        let text = pipe.text()
        for secret in ["00112233445566778899AABBCCDDEEFF", "A0A1A2A3A4A5", "B0B1B2B3B4B5", "eyJhbGciOi", "hunter2", "5EED", "FFFFFFFFFFFF"] {
            #expect(!text.contains(secret), "\(secret) reached the log: \(text)")
        }
        #expect(text == "<3>cardd: auth failed card.keyA=<redacted> db.password=<redacted> derivation.seed=<redacted> "
            + "keystore.masterKey=<redacted> mac={key:<redacted>,length:4} sector=3 sector.key_b=<redacted> uplink.token=<redacted>\n")
    }

    @Test(arguments: [
        ("card.key", true), ("keyA", true), ("sector.key_b", true), ("masterKey", true), ("api-key", true),
        ("apikey", true), ("KEY", true), ("db.password", true), ("auth-token", true), ("holder.pin", true),
        ("derivation.seed", true), ("client_secret", true), ("private", true),
        ("card.serial", false), ("reader.name", false), ("keyboard", false), ("amount.fen", false),
        ("sector", false), ("spin", false), ("tokenizer", false), ("turkey.count", true),
    ])
    func redactionRule(key: String, secret: Bool) {
        #expect(JournaldLogHandler.isSecretKey(key) == secret)
    }

    @Test func concurrentLoggersWriteWholeLines() async {
        let pipe = CapturePipe()
        // The reader blocks in read(2): on a thread of its own, not the cooperative pool the loggers run on.
        let reader = Task { await withCheckedContinuation { continuation in Thread { continuation.resume(returning: pipe.readAll()) }.start() } }
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    let logger = Logger(label: "w\(worker)") { JournaldLogHandler(label: $0, fileDescriptor: pipe.writeEnd) }
                    for index in 0..<200 { logger.info("message \(index)", metadata: ["padding": "\(String(repeating: "x", count: 300))"]) }
                }
            }
        }
        close(pipe.writeEnd)
        let text = await reader.value
        let lines = text.split(separator: "\n")
        #expect(lines.count == 1600)
        #expect(lines.allSatisfy { $0.hasPrefix("<6>w") && $0.hasSuffix(String(repeating: "x", count: 300)) })
    }
}
