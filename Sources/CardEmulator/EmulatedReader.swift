import Foundation
import MifareClassic
import SmartCard

/// What the emulated reader does with one command APDU.
public enum EmulatorReply: Sendable, Equatable {
    /// The response bytes (data + status word).
    case response([UInt8])
    /// The card left the field during this command: no response. The transport closes the card's connection.
    case cardRemoved
    /// The reader does not answer at all (fault injection): the transport sends nothing back.
    case silent
}

/// What a torn command did to the card before the card left the field.
public enum TearEffect: String, Sendable, CaseIterable, Codable {
    /// The command never reached the card: nothing changed.
    case notExecuted = "not-executed"
    /// The command took effect, but its response was lost.
    case executed
    /// A write (or transfer) left the block as it was before; other commands as `notExecuted`.
    case leftOld = "old"
    /// A write (or transfer) left the block garbled (seeded pseudo-random bytes); other commands as `notExecuted`.
    case garbled
}

/// A planned card removal, counted in APDUs from the moment it is armed.
public struct TearPlan: Sendable, Equatable, Codable {
    /// The 1-based index of the APDU during which the card leaves the field.
    public var atAPDU: Int
    /// What that APDU does before the card goes.
    public var effect: TearEffect

    public init(atAPDU: Int, effect: TearEffect) {
        self.atAPDU = atAPDU
        self.effect = effect
    }

    /// "Card removed after the Nth APDU": N APDUs complete with their responses, the card is gone at N+1.
    public static func after(_ count: Int) -> TearPlan { TearPlan(atAPDU: count + 1, effect: .notExecuted) }
}

/// Counters a test or benchmark reads back.
public struct EmulatorStatistics: Sendable, Equatable {
    /// Command APDUs handled (every `handle` call with a card present or not).
    public var apdus = 0
    /// EEPROM block writes performed on the card (writes and transfers), torn ones included.
    public var blockWrites = 0
    public init() {}
}

/// A contactless reader's firmware together with the MIFARE Classic card in its field.
///
/// Thread-safe: transports call `handle` from their own threads; tests and the control socket
/// insert, remove and arm faults from others.
public final class EmulatedReader: @unchecked Sendable {
    private let lock = NSLock()
    public let kind: ReaderKind

    public init(kind: ReaderKind, card: EmulatedCard? = nil) {
        self.kind = kind
        self.card = card
    }

    private var card: EmulatedCard?
    private var lastRemoved: EmulatedCard?
    private var plan: TearPlan?
    private var stats = EmulatorStatistics()
    private var isUnresponsive = false
    private var latencyMilliseconds = 0
    private var keySlots: [Int: [UInt8]] = [:]
    private var apdusSinceArmed = 0
    private var tearSeed: UInt64 = 0x0DE_CA7D
    private var observers: [PresenceObserver] = []

    /// Called with `true` when a card enters the field and `false` when it leaves (removal, tear).
    /// Transports use it to connect/disconnect the card side (vpcd: close the socket = card removed).
    public typealias PresenceObserver = @Sendable (_ cardPresent: Bool) -> Void

    /// Registers a presence observer; it is called outside the reader's lock, on the thread that changed presence.
    public func observePresence(_ observer: @escaping PresenceObserver) { lock.withLock { observers.append(observer) } }

    /// Per-APDU latency the transport adds before answering (to model a real reader); 0 = none.
    public var latency: Int {
        get { lock.withLock { latencyMilliseconds } }
        set { lock.withLock { latencyMilliseconds = max(0, newValue) } }
    }

    /// Notifies observers; call without holding the lock.
    private func notify(_ present: Bool) {
        for observer in lock.withLock({ observers }) { observer(present) }
    }

    /// The card in the field, if any.
    public var currentCard: EmulatedCard? { lock.withLock { card } }

    /// Puts a card in the field (replacing any other).
    public func insert(_ card: EmulatedCard) {
        card.reset()
        lock.withLock { self.card = card }
        notify(true)
    }

    /// Puts back the card last removed, memory as it was; `false` when none was removed.
    @discardableResult
    public func reinsert() -> Bool {
        let done: Bool = lock.withLock {
            guard let last = lastRemoved else { return false }
            last.reset()
            card = last
            return true
        }
        if done { notify(true) }
        return done
    }

    /// Takes the card out of the field and returns it.
    @discardableResult
    public func remove() -> EmulatedCard? {
        let removed: EmulatedCard? = lock.withLock {
            let removed = card
            if removed != nil { lastRemoved = removed }
            card = nil
            return removed
        }
        if removed != nil { notify(false) }
        return removed
    }

    /// The ATR the reader reports for the card in the field; `nil` without a card.
    public var atr: [UInt8]? { lock.withLock { card.map { ATR.storageCard(nameCode: $0.size.atrNameCode).bytes } } }

    /// Arms a card removal; replaces any armed plan.
    public func arm(_ plan: TearPlan?) {
        lock.withLock {
            self.plan = plan
            apdusSinceArmed = 0
        }
    }

    /// The armed plan, if it has not fired yet.
    public var armedPlan: TearPlan? { lock.withLock { plan } }

    /// When `true` the reader answers nothing (`.silent`).
    public var unresponsive: Bool {
        get { lock.withLock { isUnresponsive } }
        set { lock.withLock { isUnresponsive = newValue } }
    }

    public var statistics: EmulatorStatistics { lock.withLock { stats } }

    /// Card power cycle / reset (vpcd power on or reset, a re-select): the card forgets its authentication
    /// and leaves the halted state. Volatile reader key slots survive (the reader stays powered).
    public func resetCard() { lock.withLock { card?.reset() } }

    /// Handles one command APDU as the reader's firmware and the card would.
    public func handle(_ apdu: [UInt8]) -> EmulatorReply {
        let (reply, removed): (EmulatorReply, Bool) = lock.withLock {
            stats.apdus += 1
            if isUnresponsive { return (.silent, false) }
            guard let card else {
                // No card in the field: ACS answers 63 00, the others "no card" as a timeout.
                return (.response(kind == .acr122u || kind == .acr1252u ? [0x63, 0x00] : [0x64, 0x00]), false)
            }
            var mode = WriteMode.normal
            var tearing = false
            if let plan {
                apdusSinceArmed += 1
                if apdusSinceArmed >= plan.atAPDU {
                    tearing = true
                    tearSeed &+= 1
                    mode = .torn(plan.effect, seed: tearSeed)
                    self.plan = nil
                }
            }
            var firmware = Firmware(kind: kind, card: card, keySlots: keySlots, mode: mode)
            let response = firmware.process(apdu)
            stats.blockWrites += firmware.blockWrites
            if case .torn(.notExecuted, _) = mode {
                // The command never reached the card: nothing happened, not even to the reader's key slots.
            } else {
                keySlots = firmware.keySlots
            }
            if tearing {
                lastRemoved = card
                self.card = nil
                card.reset()
                return (.cardRemoved, true)
            }
            return (.response(response), false)
        }
        if removed { notify(false) }
        return reply
    }
}

/// A MIFARE Classic 1K or 4K card: its memory and what it remembers between commands.
public final class EmulatedCard: @unchecked Sendable {
    public let size: CardSize
    /// Whether block 0 is writable (a "magic" clone card).
    public let isMagic: Bool
    /// The card's memory in block order (1024 or 4096 bytes): exactly a raw `.mfd` dump.
    public internal(set) var memory: [UInt8]

    /// Builds a card from a raw dump; throws `EmulatorError.invalidImage` unless it is 1024 or 4096 bytes.
    public init(image: [UInt8], magic: Bool = false) throws {
        guard let size = CardSize(byteCount: image.count) else {
            throw EmulatorError.invalidImage(byteCount: image.count)
        }
        self.size = size
        self.isMagic = magic
        self.memory = image
    }

    /// The UID from block 0 (4-byte NUID).
    public var uid: [UInt8] { Array(memory[0..<4]) }

    /// The sector authenticated now and with which key (reader-side state of the card session).
    var authenticated: (sector: Int, keyType: KeyType)?
    /// After a failed authentication or a refused command the card stops answering until re-selected.
    var halted = false

    func reset() {
        authenticated = nil
        halted = false
    }

    func block(_ block: Int) -> [UInt8] { Array(memory[block * 16..<block * 16 + 16]) }

    func setBlock(_ block: Int, _ data: [UInt8]) { memory.replaceSubrange(block * 16..<block * 16 + 16, with: data) }
}

/// Errors the emulator reports to its user.
public enum EmulatorError: Error, Equatable, CustomStringConvertible {
    case invalidImage(byteCount: Int)

    public var description: String {
        switch self {
        case .invalidImage(let count):
            return "card image is \(count) bytes: a MIFARE Classic dump must be 1024 (1K) or 4096 (4K) bytes in block order"
        }
    }
}
