import CardEmulator
import Foundation
import MifareClassic
import SmartCard

/// Card images for tests.
public enum SampleCards {
    /// The repository root, found from this source file's location.
    public static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Tests/MifareClassicTests/Fixtures/sample-1k.mfd (made by scripts/make-sample-card.py).
    public static let sample1KPath = repositoryRoot.appendingPathComponent("Tests/MifareClassicTests/Fixtures/sample-1k.mfd").path

    public static func sample1K() throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: sample1KPath) else {
            throw TestSetupError("missing \(sample1KPath): run scripts/make-sample-card.py")
        }
        return Array(data)
    }

    /// Keys of the sample card's sector 1 (the others use the transport key).
    public static let sector1KeyA = MifareKey(hex: "112233445566")!
    public static let sector1KeyB = MifareKey(hex: "665544332211")!

    /// A factory-fresh 1K card: UID `uid`, zero data, transport trailers.
    public static func blank1K(uid: [UInt8] = [0x04, 0xA1, 0xB2, 0xC3]) -> [UInt8] {
        var image = [UInt8](repeating: 0, count: 1024)
        image.replaceSubrange(0..<4, with: uid)
        image[4] = uid.reduce(0, ^)
        image.replaceSubrange(5..<8, with: [0x08, 0x04, 0x00])
        for sector in 0..<16 {
            image.replaceSubrange((sector * 4 + 3) * 16..<(sector * 4 + 4) * 16, with: SectorTrailer.transport.block)
        }
        return image
    }
}

/// An in-process emulator presented on a vpcd port, for tests of the whole pcscd stack.
public final class VirtualCard: @unchecked Sendable {
    public let reader: EmulatedReader
    public let link: VPCDLink
    /// The pcscd reader name for the port ("Virtual PCD 00 00" for 35963).
    public let readerName: String

    public init(kind: ReaderKind = .acr122u, image: [UInt8], port: UInt16) throws {
        try PCSCDaemon.ensureRunning()
        reader = EmulatedReader(kind: kind, card: try EmulatedCard(image: image))
        link = VPCDLink(reader: reader, port: port)
        readerName = VPCDLink.readerName(port: port)
        // A card of an earlier test may still be seen as present: start from an empty reader.
        try waitForPcscd(present: false)
        link.start()
        guard link.waitUntilConnected(timeout: .seconds(10)) else {
            link.stop()
            throw TestSetupError("the emulator could not connect to vpcd on port \(port): is vsmartcard-vpcd installed (scripts/bootstrap)?")
        }
        try waitForPcscd(present: true)
    }

    /// Waits until pcscd reports the card present (or absent) on this reader: it polls vpcd about every 400 ms.
    public func waitForPcscd(present: Bool, timeout: TimeInterval = 15) throws {
        try EmulatorProcess.waitForPcscd(reader: readerName, present: present, timeout: timeout)
    }

    deinit { link.stop() }

    /// Takes the card away for good and waits until pcscd has noticed.
    public func stop() {
        link.stop()
        try? waitForPcscd(present: false)
        // pcscd polls vpcd every ~400 ms: a card connected again before its poll thread has seen this one leave is
        // never powered up (seen with pcsc-lite 1.9.9). Give it two polls.
        Thread.sleep(forTimeInterval: 0.9)
    }
}
