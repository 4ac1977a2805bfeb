import ArgumentParser
import CampusCard
import CardEmulator
import CardReader
import Foundation
import MifareClassic
import PCSC
import SmartCard

/// `cardbench card`: each campus card operation through pcscd+vpcd, per reader profile: APDUs, EEPROM block writes,
/// wall time, and the time it would take on a real ACR122U at the per-APDU figure in HardwareNotes.md.
struct CardOperations: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "card", abstract: "Campus card operations: APDUs, block writes, wall time, estimated ACR122U time.")

    @Option(help: "vpcd port.") var port: UInt16 = 35963
    @Option(help: "Assumed milliseconds per APDU on a real ACR122U (HardwareNotes.md).") var acr122uMilliseconds = 25

    func run() async throws {
        let keystorePath = NSTemporaryDirectory() + "bench-keystore-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: keystorePath) }
        let keystore = try FileKeystore.create(path: keystorePath)
        print("cardbench card: through libpcsclite -> pcscd -> vpcd -> in-process emulator; ACR122U estimate at \(acr122uMilliseconds) ms/APDU")
        print("profile       operation      APDUs  block writes   wall ms   est. ACR122U ms")
        for kind in [ReaderKind.acr122u, .acr1252u, .omnikey5422, .generic] {
            var image = [UInt8](repeating: 0, count: 1024)
            image.replaceSubrange(0..<8, with: [0x0B, 0xE7, 0xC4, 0x02, 0x0B ^ 0xE7 ^ 0xC4 ^ 0x02, 0x08, 0x04, 0x00])
            for sector in 0..<16 { image.replaceSubrange((sector * 4 + 3) * 16..<(sector * 4 + 4) * 16, with: SectorTrailer.transport.block) }
            let emulatedCard = try EmulatedCard(image: image)
            let reader = EmulatedReader(kind: kind, card: emulatedCard)
            if kind == .generic {
                // A generic Part 3 reader cannot credit a value block: a station's ACR122U issues and funds the card
                // first (in process), so the generic rows measure what such a reader does with a funded card.
                let station = EmulatedReader(kind: .acr122u, card: emulatedCard)
                let ops = CampusCardOperations(session: MifareSession(channel: EmulatedChannel(reader: station), profile: .acr122u), keystore: keystore)
                try ops.issue(Identity(serial: 1, account: 1, type: .student, keyVersion: 1, issued: CardDay(Date()), expires: CardDay(rawValue: 20_000)))
                try ops.load(Fen(10_000), terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
                try ops.waterSettle(terminal: Terminal(id: 3, journal: InMemoryTerminalJournal()), reference: 1)
            }
            let link = VPCDLink(reader: reader, port: port)
            defer { link.stop() }
            let card = try await present(link)
            let journal = InMemoryTerminalJournal()
            let profile = ReaderProfile.profile(for: kind)
            let steps: [(String, @Sendable (CampusCardOperations) throws -> Void)] = [
                ("issue", { try $0.issue(Identity(serial: 1, account: 1, type: .student, keyVersion: 1, issued: CardDay(Date()), expires: CardDay(rawValue: 20_000))) }),
                ("load", { try $0.load(Fen(10_000), terminal: Terminal(id: 1, journal: journal)) }),
                ("set pin", { try $0.setPIN(PIN("123456")) }),
                ("debit", { try $0.debit(Fen(1_250), terminal: Terminal(id: 2, journal: journal)) }),
                // Over the default per-transaction limit (50.00): the identity is read and the PIN checked.
                ("debit + PIN", { try $0.debit(Fen(6_000), terminal: Terminal(id: 2, journal: journal), pin: PIN("123456")) }),
                ("read purse", { _ = try $0.readPurse() }),
                ("water settle", { try $0.waterSettle(terminal: Terminal(id: 3, journal: journal), reference: 1) }),
                ("water debit", { try $0.waterDebit(Fen(5), terminal: Terminal(id: 4, journal: journal)) }),
                ("lock", { try $0.setStatus(.lost) }),
            ]
            for (name, step) in steps where kind != .generic || !["issue", "load", "set pin", "water settle"].contains(name) {
                let writesBefore = reader.statistics.blockWrites
                let start = ContinuousClock.now
                let result: Result<Int, any Error> = await Result {
                    try await card.perform { channel in
                        let session = MifareSession(channel: channel, profile: profile)
                        try step(CampusCardOperations(session: session, keystore: keystore))
                        return session.apduCount
                    }
                }
                let wall = elapsedSeconds(since: start) * 1000
                let writes = reader.statistics.blockWrites - writesBefore
                let label = kind.rawValue.padding(toLength: 13, withPad: " ", startingAt: 0) + " " + name.padding(toLength: 13, withPad: " ", startingAt: 0)
                switch result {
                case .success(let apdus):
                    print(label + String(format: " %6d %13d %9.2f %17d", apdus, writes, wall, apdus * acr122uMilliseconds))
                case .failure(let error):
                    print(label + "  refused: \(error)")
                }
            }
            try await card.disconnect()
            link.stop()
            try await Task.sleep(for: .milliseconds(900))  // let pcscd see the card leave before the next profile
        }
        print("generic: issued and funded on an ACR122U first (a Part 3 reader cannot credit a value block)")
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
