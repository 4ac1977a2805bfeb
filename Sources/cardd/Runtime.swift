import ArgumentParser
import BuildInfo
import CampusCard
import CardDaemon
import CMalloc
import DaemonSupport
import Dispatch
import Foundation
import Logging
import PCSC
import TerminalStore

/// The daemon's life: open everything, tell systemd READY=1 once the store is open, the keystore loaded and the
/// reader monitor runs; serve taps and the control socket; ping the watchdog only while pcscd answers the reader's
/// context within the watchdog period; on SIGTERM/SIGINT stop the machine (a water valve closes), finish the card
/// session in progress, stop the control socket, release every PC/SC context and join its thread.
struct Runtime {
    let config: DaemonConfig
    let store: TerminalStore
    let keystore: any Keystore
    let logger: Logger

    init(config: DaemonConfig, store: TerminalStore, keystore: any Keystore, logger: Logger) throws {
        self.config = config
        self.store = store
        self.keystore = keystore
        self.logger = logger
    }

    func run() async throws {
        let notifier = SystemdNotifier()
        let signals = SignalWaiter([SIGTERM, SIGINT])
        let (valve, meter) = try hardware()
        let daemon = Daemon(config: config, store: store, keystore: keystore, logger: logger, valve: valve, meter: meter)
        await daemon.start()
        var uplinkTask: Task<Void, Never>?
        if let configuration = config.uplink {
            let uplink: Uplink
            do {
                uplink = try Uplink(configuration: configuration, terminalID: config.terminalID, store: store, logger: logger) { parameters in
                    await daemon.uplinkChanged(parameters)
                }
            } catch {
                printError("cardd: \(error)")
                await daemon.stop()
                throw ExitCode(78)
            }
            await daemon.attach(uplink: uplink)
            uplinkTask = Task { await uplink.run() }
        }
        let pruned = (try? store.prune(acknowledgedBefore: Date().addingTimeInterval(-config.pruneAcknowledgedAfter))) ?? 0
        if pruned > 0 { logger.info("pruned acknowledged records", metadata: ["count": "\(pruned)"]) }

        let api = ControlAPI(daemon: daemon)
        var socket = ControlSocketServer.Configuration(path: config.controlSocketPath, mode: 0o660, group: config.controlSocketGroup)
        socket.idleTimeout = .seconds(3600)
        let server = ControlSocketServer(configuration: socket, logger: logger) { request in await api.handle(request) }
        do { try server.start() } catch {
            printError("cardd: control socket \(config.controlSocketPath): \(error)")
            await daemon.stop()
            // 78 (configuration) tells systemd not to restart into the same refusal (RestartPreventExitStatus).
            throw ExitCode(ControlSocketServer.Configuration.isConfigurationProblem(error) ? 78 : 1)
        }

        let health = Health()
        let readerTask = Task { await readerLoop(daemon, health: health) }
        let tickTask = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                await daemon.tick()
            }
        }
        let probeTask = Task {
            while !Task.isCancelled {
                if await daemon.port.probe() { health.probed() }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        // READY=1 once pcscd answered the reader's context (the monitor runs by then).
        while !health.isAlive(within: .seconds(5)), !signals.fired {
            try? await Task.sleep(for: .milliseconds(100))
        }
        notify(notifier, .ready, .status(await statusLine(daemon)))
        logger.info("ready", metadata: ["mode": "\(config.mode.rawValue)", "terminal": "\(config.terminalID)", "version": "\(BuildInfo.versionLine)"])

        let watchdogTask = Task {
            let interval = notifier.watchdogInterval ?? .seconds(5)
            let budget = notifier.watchdogTimeout ?? .seconds(10)
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if health.isAlive(within: budget) {
                    notify(notifier, .watchdog, .status(await statusLine(daemon)))
                } else {
                    logger.error("pcscd or the reader does not answer: no watchdog ping (systemd restarts cardd if it lasts)")
                }
            }
        }

        let signal = await signals.wait()
        logger.notice("stopping", metadata: ["signal": "\(signal)"])
        notify(notifier, .stopping)
        watchdogTask.cancel()
        readerTask.cancel()
        tickTask.cancel()
        probeTask.cancel()
        uplinkTask?.cancel()
        await daemon.stop()
        await server.stop()
        _ = await readerTask.value
        _ = await tickTask.value
        _ = await probeTask.value
        // The uplink's client joins its event loop thread before the store closes under it.
        _ = await uplinkTask?.value
        try? store.close()
        logger.info("stopped")
    }

    private func notify(_ notifier: SystemdNotifier, _ messages: NotifyMessage...) {
        do { _ = try notifier.notify(messages) } catch { logger.warning("sd_notify failed", metadata: ["error": "\(error)"]) }
    }

    private func statusLine(_ daemon: Daemon) async -> String {
        let queue = try? store.queueSummary()
        let card = await daemon.cardUID.map { "card \($0)" } ?? "no card"
        let uplink = await daemon.uplink?.currentStatus()
        let online = uplink.map { $0.lastError == nil && $0.lastSuccessAt != nil ? ", online" : ", offline" } ?? ""
        return "\(config.mode.rawValue) terminal \(config.terminalID): \(queue?.unacknowledged ?? 0) unsent\(online), \(card)"
    }

    /// The water controller's valve and meter; none in the other modes.
    private func hardware() throws -> ((any Valve)?, (any FlowMeter)?) {
        guard config.mode == .water else { return (nil, nil) }
        switch config.water.backend {
        case .simulated: return (SimulatedValve(), SimulatedFlowMeter())
        case .gpio:
            guard let gpio = config.water.gpio else {
                printError("cardd: configuration: water.gpio is required with water.backend \"gpio\"")
                throw ExitCode(78)
            }
            do {
                let valve = try GPIOValve(chip: gpio.chip, line: gpio.valveLine, activeLow: gpio.activeLow)
                let meter = try GPIOFlowMeter(chip: gpio.chip, line: gpio.meterLine, activeLow: gpio.meterActiveLow,
                                              pullUp: gpio.meterPullUp, debounceMicroseconds: gpio.debounceMicroseconds)
                return (valve, meter)
            } catch {
                printError("cardd: GPIO \(gpio.chip): \(error)")
                // A chip that is not there is the configuration's (78: no restart); a busy line may free up (1).
                throw ExitCode(FileManager.default.fileExists(atPath: gpio.chip) ? 1 : 78)
            }
        }
    }

    /// Feeds the reader monitor's events for the configured reader into the daemon. The monitor survives pcscd
    /// restarts; the loop ends when cancelled.
    private func readerLoop(_ daemon: Daemon, health: Health) async {
        var readers: [String] = []
        while !Task.isCancelled {
            do {
                for try await event in ReaderMonitor().events() {
                    switch event {
                    case .readerAdded(let name): readers.append(name)
                    case .readerRemoved(let name):
                        if daemon.port.isOurs(name, among: readers) { await daemon.cardLeft() }
                        readers.removeAll { $0 == name }
                    case .cardInserted(let reader, _):
                        if daemon.port.isOurs(reader, among: readers) { await daemon.cardArrived(reader: reader) }
                    case .cardRemoved(let reader):
                        if daemon.port.isOurs(reader, among: readers) {
                            await daemon.cardLeft()
                            // A tap's freed memory stays resident in glibc's per-thread arenas and RSS grew ~0.5 KiB
                            // a tap without it (HardwareNotes "cardd's memory"); nobody waits on the box now.
                            malloc_trim(0)
                        }
                    case .serviceLost:
                        // Keep the reader list: the monitor announces again only the readers that changed across the
                        // restart (it reports a reader gone meanwhile as removed), so forgetting them here made every
                        // card after a pcscd restart "not ours" and an armed sale never saw its card.
                        await daemon.serviceChanged(up: false)
                    case .serviceRestored: await daemon.serviceChanged(up: true)
                    }
                }
            } catch {
                logger.error("the reader monitor failed; restarting it", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }
}

/// When pcscd last answered the daemon's reader context.
final class Health: @unchecked Sendable {
    private let lock = NSLock()
    private var last: ContinuousClock.Instant?

    func probed() { lock.withLock { last = .now } }

    func isAlive(within budget: Duration) -> Bool {
        lock.withLock { last.map { ContinuousClock.now - $0 < budget } ?? false }
    }
}

/// Waits for the first of some signals (their default action is disabled while the daemon runs).
final class SignalWaiter: @unchecked Sendable {
    private let lock = NSLock()
    private var sources: [any DispatchSourceSignal] = []
    private var received: Int32?
    private var waiters: [CheckedContinuation<Int32, Never>] = []

    init(_ signals: [Int32]) {
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.fire(number) }
            source.resume()
            sources.append(source)
        }
    }

    var fired: Bool { lock.withLock { received != nil } }

    private func fire(_ number: Int32) {
        let waiting: [CheckedContinuation<Int32, Never>] = lock.withLock {
            guard received == nil else { return [] }
            received = number
            defer { waiters.removeAll() }
            return waiters
        }
        for waiter in waiting { waiter.resume(returning: number) }
    }

    func wait() async -> Int32 {
        await withCheckedContinuation { continuation in
            let now: Int32? = lock.withLock {
                if let received { return received }
                waiters.append(continuation)
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }
}
