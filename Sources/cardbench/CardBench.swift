import ArgumentParser
import BuildInfo
import CardEmulator
import CardReader
import CardSession
import CBenchLoop
import Foundation
import MifareClassic
import PCSC
import SmartCard

@main
struct CardBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cardbench",
        abstract: "Benchmarks that print figures (run with -c release).",
        version: BuildInfo.versionLine,
        subcommands: [APDU.self, Emulator.self, CardOperations.self, StoreBench.self, DaemonBench.self])

    /// ArgumentParser's entry point, plus: every PC/SC context thread has ended before the process exits, whichever
    /// way it ends (as in cardctl; issue 8, HardwareNotes.md "Exit and libpcsclite").
    static func main() async {
        await mainReleasingPCSC()
    }
}

/// A factory-fresh 1K card for the benchmarks.
func benchCard() throws -> EmulatedCard {
    var image = [UInt8](repeating: 0, count: 1024)
    image.replaceSubrange(0..<8, with: [0x0B, 0xE7, 0xC4, 0x01, 0x0B ^ 0xE7 ^ 0xC4 ^ 0x01, 0x08, 0x04, 0x00])
    for sector in 0..<16 { image.replaceSubrange((sector * 4 + 3) * 16..<(sector * 4 + 4) * 16, with: SectorTrailer.transport.block) }
    return try EmulatedCard(image: image)
}

func rate(_ count: Int, _ seconds: Double) -> Double { Double(count) / seconds }

/// Starts presenting the emulator's card on vpcd and connects to it once pcscd has seen it.
func present(_ link: VPCDLink) async throws -> PCSCCard {
    link.start()
    guard link.waitUntilConnected(timeout: .seconds(10)) else {
        throw ValidationError("cannot connect to vpcd on port \(link.port): is pcscd running with vsmartcard-vpcd? (scripts/bootstrap)")
    }
    let readerName = VPCDLink.readerName(port: link.port)
    let context = try await PCSCContext.establish()
    for _ in 0..<50 {
        if let card = try? await context.connect(reader: readerName) { return card }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw ValidationError("pcscd did not see the emulated card on \(readerName) within 5 s")
}

func elapsedSeconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

func line(_ name: String, _ perSecond: Double, baseline: Double?) -> String {
    let micro = 1_000_000 / perSecond
    let ratio = baseline.map { String(format: "%.3fx", perSecond / $0) } ?? "1.000x (floor)"
    return name.padding(toLength: 44, withPad: " ", startingAt: 0)
        + String(format: "%10.0f APDU/s %9.1f µs/APDU   ", perSecond, micro) + ratio
}

struct APDU: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "APDU round trips per second through pcscd+vpcd: a plain C loop, our binding, pyscard.")

    @Option(help: "APDUs per run.") var count = 5000
    @Option(help: "vpcd port the in-process emulator presents its card on.") var port: UInt16 = 35963
    @Option(help: "Interleaved rounds per client (the best round counts).") var runs = 7

    func run() async throws {
        let reader = EmulatedReader(kind: .acr122u, card: try benchCard())
        let link = VPCDLink(reader: reader, port: port)
        defer { link.stop() }
        let readerName = VPCDLink.readerName(port: port)
        let card = try await present(link)
        let apdu: [UInt8] = [0xFF, 0xCA, 0x00, 0x00, 0x00]  // GET UID: answered by the firmware, no card state
        let count = count

        print("cardbench apdu: \(count) x GET DATA (FF CA 00 00 00), best of \(runs) runs, through libpcsclite -> pcscd -> vpcd -> in-process emulator")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) CPUs; \(ProcessInfo.processInfo.operatingSystemVersionString)")

        // Interleaved rounds, best of each: no client always runs first or last.
        var cBest = 0.0, sessionBest = 0.0, asyncBest = 0.0
        for _ in 0..<runs {
            let sessionSeconds = try await card.perform { channel in
                let start = ContinuousClock.now
                for _ in 0..<count { _ = try channel.transmit(apdu) }
                return elapsedSeconds(since: start)
            }
            sessionBest = max(sessionBest, rate(count, sessionSeconds))
            var seconds = 0.0
            let rv = onecard_bench_c_loop(readerName, apdu, apdu.count, count, &seconds)
            guard rv == 0 else { throw PCSCError(rawValue: rv) }
            cBest = max(cBest, rate(count, seconds))


            let start = ContinuousClock.now
            for _ in 0..<count { _ = try await card.transmit(apdu) }
            asyncBest = max(asyncBest, rate(count, elapsedSeconds(since: start)))
        }
        try await card.disconnect()
        let python = pyscardRate(reader: readerName, count: count, runs: runs)

        print(line("C loop over SCardTransmit (floor)", cBest, baseline: nil))
        print(line("OneCard PCSC, one session (perform)", sessionBest, baseline: cBest))
        print(line("OneCard PCSC, one async hop per APDU", asyncBest, baseline: cBest))
        if let python {
            print(line("pyscard (python3-pyscard)", python, baseline: cBest))
        } else {
            print("pyscard: not available (install python3-pyscard)")
        }
        print("emulator: \(reader.statistics.apdus) APDUs handled")
    }

    /// Runs the same loop in pyscard; returns its best rate.
    func pyscardRate(reader: String, count: Int, runs: Int) -> Double? {
        let script = """
            import time
            from smartcard.System import readers
            r = [x for x in readers() if str(x) == "\(reader)"][0]
            c = r.createConnection(); c.connect()
            best = 0.0
            for _ in range(\(runs)):
                t = time.perf_counter()
                for _ in range(\(count)):
                    c.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00])
                best = max(best, \(count) / (time.perf_counter() - t))
            print(best)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", script]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

struct Emulator: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The in-process emulator's own cost per APDU (no pcscd).")

    @Option(help: "APDUs per measurement.") var count = 200_000

    func run() throws {
        let reader = EmulatedReader(kind: .acr122u, card: try benchCard())
        let channel = EmulatedChannel(reader: reader)
        _ = try channel.transmit([0xFF, 0x82, 0x00, 0x00, 0x06] + MifareKey.transport.bytes)
        _ = try channel.transmit([0xFF, 0x86, 0x00, 0x00, 0x05, 0x01, 0x00, 0x07, 0x60, 0x00])
        print("cardbench emulator: \(count) APDUs each, in-process (EmulatedReader.handle), ACR122U firmware")
        for (name, apdu) in [
            ("GET DATA (UID)", [UInt8]([0xFF, 0xCA, 0x00, 0x00, 0x00])),
            ("READ BINARY block 4", [0xFF, 0xB0, 0x00, 0x04, 0x10]),
            ("UPDATE BINARY block 4", [0xFF, 0xD6, 0x00, 0x04, 0x10] + [UInt8](repeating: 0x5A, count: 16)),
        ] {
            let start = ContinuousClock.now
            for _ in 0..<count { _ = reader.handle(apdu) }
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(name.padding(toLength: 26, withPad: " ", startingAt: 0) + String(format: "%8.0f ns/APDU  %10.0f APDU/s", seconds / Double(count) * 1e9, Double(count) / seconds))
        }
    }
}
