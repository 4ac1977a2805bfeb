import CampusCard
import Foundation
import StrictJSON

/// A configuration that cannot be used: which key, and one line (what, why, what to do).
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// The file cannot be read.
        case unreadable
        /// The file is not a JSON object.
        case malformed
        case unknownKey = "unknown-key"
        case missingKey = "missing-key"
        case badValue = "bad-value"
    }
    public var code: Code
    /// The key path ("water.unitPrice"), or the environment variable it came from; `nil` for the file as a whole.
    public var key: String?
    public var message: String
    public init(_ code: Code, key: String?, _ message: String) {
        self.code = code
        self.key = key
        self.message = message
    }
    public var description: String { key.map { "\($0): \(message)" } ?? message }
}

/// cardd's configuration: one JSON file (default /etc/onecard/cardd.json) with `ONECARD_<KEY>` environment overrides.
/// Every key is documented in docs/cardd-config.md; unknown keys and bad values are refused at load, naming the key.
/// Amounts are yuan strings ("0.05"), never numbers.
public struct DaemonConfig: Hashable, Sendable {
    /// `load`: an online top-up station (圈存): the operator arms a load, the next card is loaded with money held
    /// from the holder's account at the settlement service (online only: it needs `uplink`).
    public enum Mode: String, Sendable, Hashable, CaseIterable { case pos, water, settle, load }
    public enum ValveBackend: String, Sendable, Hashable, CaseIterable { case gpio, simulated }

    /// The GPIO lines of a water controller (Linux GPIO character device, uAPI v2).
    public struct GPIO: Hashable, Sendable {
        public var chip: String
        public var valveLine: UInt32
        public var meterLine: UInt32
        /// The valve relay is driven low to open.
        public var activeLow: Bool
        public var meterActiveLow: Bool
        public var meterPullUp: Bool
        public var debounceMicroseconds: UInt32
    }

    public struct Water: Hashable, Sendable {
        public var unitPrice: Fen
        public var pulsesPerUnit: Int
        public var prefetchPulses: Int
        public var maxSession: TimeInterval
        public var meterSilence: TimeInterval
        public var leakTolerancePulses: Int
        public var backend: ValveBackend
        /// Set when `backend` is `gpio`.
        public var gpio: GPIO?
    }

    /// The settlement service this box uploads to (absent: an offline-only box; its records wait in the store).
    public struct Uplink: Hashable, Sendable {
        /// "https://settle.campus.example" (http only on loopback or behind a trusted link: see docs/settlement.md).
        public var url: String
        /// The file holding this terminal's signing secret (hex), readable by cardd only.
        public var secretFile: String
        public var batchSize: Int
        public var interval: TimeInterval
        public var timeout: TimeInterval
        public var maxBackoff: TimeInterval
    }

    public static let defaultPath = "/etc/onecard/cardd.json"

    public var terminalID: UInt16
    public var mode: Mode
    public var keystorePath: String
    public var stateDirectory: String
    public var storePath: String
    /// The PC/SC reader to use (its name, or a prefix of it); `nil`: the first reader.
    public var readerName: String?
    public var controlSocketPath: String
    /// The group that may use the control socket (the socket is made 0660 for it); `nil`: the daemon's own group.
    public var controlSocketGroup: String?
    public var timeZone: TimeZone
    public var saleTimeout: TimeInterval
    public var windows: [PriceWindow]
    public var water: Water
    public var offline: OfflinePolicy
    public var pruneAcknowledgedAfter: TimeInterval
    /// The longest the daemon's loops may go without progress before it closes the valve and reports a fault.
    public var watchdog: TimeInterval
    public var uplink: Uplink?

    /// The POS machine's configuration. A load station runs the same machine (an armed amount, the next card, one
    /// result) with no price windows and no offline limits: it is online only, the settlement service decides.
    public var pos: PosMachine.Configuration {
        mode == .load
            ? PosMachine.Configuration(saleTimeout: saleTimeout, windows: [], timeZone: timeZone, policy: .unlimited)
            : PosMachine.Configuration(saleTimeout: saleTimeout, windows: windows, timeZone: timeZone, policy: offline)
    }

    /// The water machine's configuration.
    public var waterMachine: WaterMachine.Configuration {
        WaterMachine.Configuration(unitPrice: water.unitPrice, pulsesPerUnit: water.pulsesPerUnit, prefetchPulses: water.prefetchPulses,
                                   maxSession: water.maxSession, meterSilence: water.meterSilence,
                                   leakTolerancePulses: water.leakTolerancePulses, policy: offline)
    }

    // MARK: Loading

    /// Loads the file at `path` (default: `ONECARD_CONFIG` from `environment`, else /etc/onecard/cardd.json) with the
    /// `ONECARD_<KEY>` overrides from `environment`.
    public static func load(path: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigError) -> DaemonConfig {
        let path = path ?? environment["ONECARD_CONFIG"] ?? defaultPath
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(.unreadable, key: nil, "cannot read the configuration \(path): create it (systemd/cardd.example.json) or set ONECARD_CONFIG")
        }
        return try parse(data, environment: environment, source: path)
    }

    /// What is wrong with JSON text, and where (line and column): `JSONDecoder` says only that it is not JSON.
    static func jsonProblem(in data: Data) -> String {
        do {
            _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            return "not a JSON value"
        } catch {
            var detail = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? "unreadable"
            if detail.hasSuffix(".") { detail.removeLast() }
            guard let range = detail.range(of: #" around character [0-9]+"#, options: .regularExpression),
                  let offset = Int(detail[range].split(separator: " ").last ?? "") else { return detail }
            let before = data.prefix(offset)
            let line = before.filter { $0 == 0x0A }.count + 1
            let column = offset - (before.lastIndex(of: 0x0A).map { $0 - data.startIndex + 1 } ?? 0) + 1
            return detail.replacingCharacters(in: range, with: "") + " at line \(line), column \(column)"
        }
    }

    /// Parses a configuration file's contents with the overrides from `environment`.
    public static func parse(_ data: Data, environment: [String: String] = [:], source: String = "the configuration") throws(ConfigError) -> DaemonConfig {
        let root: JSONValue
        do { root = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw ConfigError(.malformed, key: nil, "\(source) is not valid JSON (\(jsonProblem(in: data))): fix it against systemd/cardd.example.json")
        }
        switch StrictJSON.check(data, wholeNumbersOnly: false) {
        case .clean: break
        case let .problem(problem): throw ConfigError(.malformed, key: nil, "\(source): \(problem) (docs/cardd-config.md)")
        case .notJSON: throw ConfigError(.malformed, key: nil, "\(source) is not UTF-8 JSON (a byte-order mark, or UTF-16): save it as UTF-8 without a byte-order mark")
        }
        guard case .object(let object) = root else {
            throw ConfigError(.malformed, key: nil, "\(source) must hold one JSON object {…}: see systemd/cardd.example.json")
        }
        var values: [String: Setting] = [:]
        try flatten(object, prefix: "", into: &values)
        for key in Key.all {
            if let text = environment[key.environmentName] { values[key.path] = .environment(text, key.environmentName) }
        }
        return try DaemonConfig(values)
    }

    /// `ONECARD_` variables in `environment` that name no key (nor ONECARD_CONFIG): probably typos; the daemon logs them.
    public static func unrecognisedEnvironment(_ environment: [String: String]) -> [String] {
        let known = Set(Key.all.map(\.environmentName) + ["ONECARD_CONFIG"])
        return environment.keys.filter { $0.hasPrefix("ONECARD_") && !known.contains($0) }.sorted()
    }

    /// A value as found: from the file, or the text of an environment variable.
    enum Setting {
        case file(JSONValue)
        case environment(String, String)
    }

    static func flatten(_ object: [String: JSONValue], prefix: String, into values: inout [String: Setting]) throws(ConfigError) {
        for (name, value) in object {
            let path = prefix + name
            if Key.sections.contains(path) {
                guard case .object(let inner) = value else {
                    throw ConfigError(.badValue, key: path, "must be an object {…} of settings (docs/cardd-config.md)")
                }
                try flatten(inner, prefix: path + ".", into: &values)
            } else if Key.all.contains(where: { $0.path == path }) {
                values[path] = .file(value)
            } else {
                let close = Key.all.map(\.path).filter { $0.lowercased() == path.lowercased() }.first
                throw ConfigError(.unknownKey, key: path, "is not a cardd setting" + (close.map { ": did you mean \($0)?" } ?? ": see docs/cardd-config.md for the keys"))
            }
        }
    }

    init(_ values: [String: Setting]) throws(ConfigError) {
        let read = Reader(values: values)
        guard let id = try read.int("terminalID", 1...65_535) else {
            throw ConfigError(.missingKey, key: "terminalID", "is required: this terminal's id, 1-65535, unique on the campus (the settlement service dedupes on it)")
        }
        terminalID = UInt16(id)
        guard let mode = try read.choice("mode", Mode.self) else {
            throw ConfigError(.missingKey, key: "mode", "is required: pos, water, settle or load")
        }
        self.mode = mode
        keystorePath = try read.path("keystore") ?? "/etc/onecard/keystore.json"
        stateDirectory = try read.path("stateDirectory") ?? "/var/lib/onecard"
        storePath = try read.path("store.path") ?? (stateDirectory as NSString).appendingPathComponent("cardd.sqlite")
        pruneAcknowledgedAfter = TimeInterval(try read.int("store.pruneAcknowledgedAfterDays", 1...3_650) ?? 30) * 86_400
        readerName = try read.string("reader")
        controlSocketPath = try read.path("control.socket") ?? "/run/onecard/cardd.sock"
        controlSocketGroup = try read.string("control.group")
        if let name = try read.string("timeZone") {
            guard let zone = TimeZone(identifier: name) else {
                throw ConfigError(.badValue, key: "timeZone", "\"\(name)\" is not a time zone: use an IANA name such as Asia/Shanghai")
            }
            timeZone = zone
        } else {
            timeZone = .current
        }
        watchdog = TimeInterval(try read.int("watchdogSeconds", 1...600) ?? 10)
        saleTimeout = TimeInterval(try read.int("pos.saleTimeoutSeconds", 1...3_600) ?? 60)
        windows = try read.windows("pos.windows")

        let unitPrice = try read.yuan("water.unitPrice") ?? Fen(5)
        guard unitPrice > .zero, unitPrice <= WaterSettlement.maximumCap else {
            throw ConfigError(.badValue, key: "water.unitPrice", "\(unitPrice.yuan) yuan: a unit costs more than 0.00 and at most the water wallet's cap (\(WaterSettlement.maximumCap.yuan))")
        }
        let pulsesPerUnit = try read.int("water.pulsesPerUnit", 1...1_000_000) ?? 45
        let prefetch = try read.int("water.prefetchPulses", 0...1_000_000) ?? pulsesPerUnit / 2
        guard prefetch < pulsesPerUnit else {
            throw ConfigError(.badValue, key: "water.prefetchPulses", "\(prefetch) must be less than water.pulsesPerUnit (\(pulsesPerUnit)): the next unit is debited while the current one still runs")
        }
        let backend = try read.choice("water.backend", ValveBackend.self) ?? .gpio
        var gpio: GPIO?
        if backend == .gpio {
            let chip = try read.path("water.gpio.chip") ?? "/dev/gpiochip0"
            let valve = try read.int("water.gpio.valveLine", 0...1_023)
            let meter = try read.int("water.gpio.meterLine", 0...1_023)
            if mode == .water {
                guard let valve else { throw ConfigError(.missingKey, key: "water.gpio.valveLine", "is required with the gpio backend: the valve relay's line offset on \(chip) (`gpioinfo`)") }
                guard let meter else { throw ConfigError(.missingKey, key: "water.gpio.meterLine", "is required with the gpio backend: the flow meter's line offset on \(chip)") }
                guard valve != meter else { throw ConfigError(.badValue, key: "water.gpio.meterLine", "is the valve's line (\(valve)) too: the meter needs a line of its own") }
            }
            gpio = GPIO(chip: chip, valveLine: UInt32(valve ?? 0), meterLine: UInt32(meter ?? 0),
                        activeLow: try read.bool("water.gpio.activeLow") ?? false,
                        meterActiveLow: try read.bool("water.gpio.meterActiveLow") ?? false,
                        meterPullUp: try read.bool("water.gpio.meterPullUp") ?? true,
                        debounceMicroseconds: UInt32(try read.int("water.gpio.debounceMicroseconds", 0...100_000) ?? 0))
        }
        water = Water(unitPrice: unitPrice, pulsesPerUnit: pulsesPerUnit, prefetchPulses: prefetch,
                      maxSession: TimeInterval(try read.int("water.maxSessionSeconds", 10...86_400) ?? 1_800),
                      meterSilence: TimeInterval(try read.int("water.meterSilenceSeconds", 1...3_600) ?? 30),
                      leakTolerancePulses: try read.int("water.leakTolerancePulses", 0...1_000_000) ?? 20,
                      backend: backend, gpio: gpio)

        if let url = try read.string("uplink.url") {
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil,
                  parsed.query == nil, parsed.path.isEmpty || parsed.path == "/" else {
                throw ConfigError(.badValue, key: read.name("uplink.url"), "\"\(url)\" is not the settlement service's base URL: give e.g. \"https://settle.campus.example\" (no path)")
            }
            uplink = Uplink(url: url, secretFile: try read.path("uplink.secretFile") ?? "/etc/onecard/uplink.secret",
                            batchSize: try read.int("uplink.batchSize", 1...1_000) ?? 500,
                            interval: TimeInterval(try read.int("uplink.intervalSeconds", 1...86_400) ?? 30),
                            timeout: TimeInterval(try read.int("uplink.timeoutSeconds", 1...600) ?? 30),
                            maxBackoff: TimeInterval(try read.int("uplink.maxBackoffSeconds", 1...86_400) ?? 300))
        } else {
            for key in ["uplink.secretFile", "uplink.batchSize", "uplink.intervalSeconds", "uplink.timeoutSeconds", "uplink.maxBackoffSeconds"] where values[key] != nil {
                throw ConfigError(.missingKey, key: "uplink.url", "is required when \(key) is set: the settlement service's base URL")
            }
            uplink = nil
        }

        if mode == .load, uplink == nil {
            throw ConfigError(.missingKey, key: "uplink.url", "is required in load mode: a load station is online only (the money comes from the holder's account at the settlement service)")
        }

        // Each limit: absent → the default, null (or "off" in the environment) → no limit.
        func limit<T>(_ path: String, _ fallback: T?, _ parse: (String) throws(ConfigError) -> T?) throws(ConfigError) -> T? {
            read.values[path] == nil ? fallback : read.isNull(path) ? nil : try parse(path)
        }
        // A money limit of 0.00 would refuse every sale: off is null.
        func positiveYuan(_ path: String) throws(ConfigError) -> Fen? {
            let value = try read.yuan(path)
            if let value, value <= .zero { throw read.bad(path, "must be more than 0.00 yuan (null switches the limit off)") }
            return value
        }
        let defaults = OfflinePolicy.defaults
        offline = OfflinePolicy(
            maxDebit: try limit("offline.maxDebit", defaults.maxDebit, positiveYuan),
            maxUnsentCount: try limit("offline.maxUnsentCount", defaults.maxUnsentCount) { path throws(ConfigError) in try read.int(path, 1...10_000_000) },
            maxUnsentTotal: try limit("offline.maxUnsentTotal", defaults.maxUnsentTotal, positiveYuan),
            maxUnsentAge: try limit("offline.maxUnsentAgeHours", defaults.maxUnsentAge) { path throws(ConfigError) in
                try read.int(path, 1...87_600).map { TimeInterval($0) * 3_600 }
            },
            maxBlacklistAge: try limit("offline.maxBlacklistAgeHours", defaults.maxBlacklistAge) { path throws(ConfigError) in
                try read.int(path, 1...87_600).map { TimeInterval($0) * 3_600 }
            })
    }

    // MARK: Keys

    /// One setting: its path in the file and its environment variable.
    struct Key: Sendable {
        var path: String
        /// "water.gpio.valveLine" → ONECARD_WATER_GPIO_VALVE_LINE; "terminalID" → ONECARD_TERMINAL_ID.
        var environmentName: String {
            var name = "ONECARD_"
            var previous: Character = "_"
            for character in path {
                if character == "." {
                    name += "_"
                } else if character.isUppercase && previous.isLowercase {
                    name += "_" + character.uppercased()
                } else {
                    name += character.uppercased()
                }
                previous = character == "." ? "_" : character
            }
            return name
        }

        static let all: [Key] = [
            "terminalID", "mode", "keystore", "stateDirectory", "reader", "timeZone", "watchdogSeconds",
            "store.path", "store.pruneAcknowledgedAfterDays",
            "control.socket", "control.group",
            "pos.saleTimeoutSeconds", "pos.windows",
            "water.unitPrice", "water.pulsesPerUnit", "water.prefetchPulses", "water.maxSessionSeconds",
            "water.meterSilenceSeconds", "water.leakTolerancePulses", "water.backend",
            "water.gpio.chip", "water.gpio.valveLine", "water.gpio.meterLine", "water.gpio.activeLow",
            "water.gpio.meterActiveLow", "water.gpio.meterPullUp", "water.gpio.debounceMicroseconds",
            "offline.maxDebit", "offline.maxUnsentCount", "offline.maxUnsentTotal", "offline.maxUnsentAgeHours",
            "offline.maxBlacklistAgeHours",
            "uplink.url", "uplink.secretFile", "uplink.batchSize", "uplink.intervalSeconds", "uplink.timeoutSeconds",
            "uplink.maxBackoffSeconds",
        ].map { Key(path: $0) }
        static let sections: Set<String> = ["store", "control", "pos", "water", "water.gpio", "offline", "uplink"]
    }

    /// Every key path, for the documentation check.
    public static var keyPaths: [String] { Key.all.map(\.path) }
    /// The environment variable that overrides `path`.
    public static func environmentName(of path: String) -> String { Key(path: path).environmentName }

    /// Typed access to the settings, each error naming its key (or its environment variable).
    struct Reader {
        var values: [String: Setting]

        func name(_ path: String) -> String {
            if case .environment(_, let variable)? = values[path] { return "\(variable) (\(path))" }
            return path
        }
        func bad(_ path: String, _ message: String) -> ConfigError { ConfigError(.badValue, key: name(path), message) }

        func isNull(_ path: String) -> Bool {
            switch values[path] {
            case .file(.null)?: true
            case .environment(let text, _)?: ["null", "off"].contains(text.lowercased())
            default: false
            }
        }

        func string(_ path: String) throws(ConfigError) -> String? {
            switch values[path] {
            case nil, .file(.null)?: return nil
            case .file(.string(let text))?: return try nonEmpty(text, path)
            case .environment(let text, _)?: return try nonEmpty(text, path)
            default: throw bad(path, "must be a string")
            }
        }
        private func nonEmpty(_ text: String, _ path: String) throws(ConfigError) -> String {
            guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { throw bad(path, "is empty: give a value or leave the key out") }
            return text
        }

        func path(_ path: String) throws(ConfigError) -> String? {
            guard let text = try string(path) else { return nil }
            guard text.hasPrefix("/") else { throw bad(path, "\"\(text)\" must be an absolute path (starting with /)") }
            return text
        }

        func int(_ path: String, _ range: ClosedRange<Int>) throws(ConfigError) -> Int? {
            let number: Int
            switch values[path] {
            case nil, .file(.null)?: return nil
            case .file(.int(let value))?: number = value
            case .environment(let text, _)?:
                guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else { throw bad(path, "\"\(text)\" is not a whole number") }
                number = value
            default: throw bad(path, "must be a whole number (\(range.lowerBound)-\(range.upperBound))")
            }
            guard range.contains(number) else { throw bad(path, "\(number) is out of range: \(range.lowerBound)-\(range.upperBound)") }
            return number
        }

        func bool(_ path: String) throws(ConfigError) -> Bool? {
            switch values[path] {
            case nil, .file(.null)?: return nil
            case .file(.bool(let value))?: return value
            case .environment(let text, _)?:
                switch text.lowercased() {
                case "true", "1", "yes": return true
                case "false", "0", "no": return false
                default: throw bad(path, "\"\(text)\" is not true or false")
                }
            default: throw bad(path, "must be true or false")
            }
        }

        func choice<T: RawRepresentable & CaseIterable>(_ path: String, _: T.Type) throws(ConfigError) -> T? where T.RawValue == String {
            guard let text = try string(path) else { return nil }
            guard let value = T(rawValue: text) else {
                throw bad(path, "\"\(text)\" is not one of: \(T.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return value
        }

        /// An amount in yuan, as a string ("0.05"): a number would invite floating point.
        func yuan(_ path: String) throws(ConfigError) -> Fen? {
            let text: String
            switch values[path] {
            case nil, .file(.null)?: return nil
            case .file(.string(let value))?: text = value
            case .environment(let value, _)?: text = value
            case .file(.int), .file(.double)?: throw bad(path, "amounts are yuan strings such as \"0.05\", not numbers (floating point loses fen)")
            default: throw bad(path, "must be an amount in yuan, a string such as \"3.50\"")
            }
            do { return try Fen(yuan: text) } catch { throw bad(path, "\(error)") }
        }

        func windows(_ path: String) throws(ConfigError) -> [PriceWindow] {
            let list: [JSONValue]
            switch values[path] {
            case nil, .file(.null)?: return []
            case .file(.array(let items))?: list = items
            case .environment(let text, _)?:
                guard let parsed = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)), case .array(let items) = parsed else {
                    throw bad(path, "must be a JSON array of {\"name\", \"start\", \"end\", \"price\"}")
                }
                list = items
            default: throw bad(path, "must be an array of {\"name\", \"start\", \"end\", \"price\"}")
            }
            var windows: [PriceWindow] = []
            for (index, item) in list.enumerated() {
                let at = "\(path)[\(index)]"
                guard case .object(let fields) = item else { throw bad(at, "must be an object {\"name\", \"start\", \"end\", \"price\"}") }
                if let unknown = fields.keys.sorted().first(where: { !["name", "start", "end", "price"].contains($0) }) {
                    throw ConfigError(.unknownKey, key: "\(at).\(unknown)", "is not a window setting: name, start, end, price")
                }
                func text(_ field: String) throws(ConfigError) -> String {
                    guard case .string(let value)? = fields[field], !value.isEmpty else {
                        throw ConfigError(fields[field] == nil ? .missingKey : .badValue, key: "\(at).\(field)", "must be a string")
                    }
                    return value
                }
                let name = try text("name")
                guard let start = PriceWindow.minutes(try text("start")), start < 1_440 else {
                    throw ConfigError(.badValue, key: "\(at).start", "must be a time of day HH:MM, e.g. \"07:00\"")
                }
                guard let end = PriceWindow.minutes(try text("end")), end > start else {
                    throw ConfigError(.badValue, key: "\(at).end", "must be a time of day HH:MM after start (up to \"24:00\")")
                }
                let priceText = try text("price")
                let price: Fen
                do { price = try Fen(yuan: priceText) } catch let error as AmountError {
                    throw ConfigError(.badValue, key: "\(at).price", error.description)
                } catch {
                    throw ConfigError(.badValue, key: "\(at).price", "\(error)")
                }
                guard price > .zero else { throw ConfigError(.badValue, key: "\(at).price", "must be more than 0.00 yuan") }
                // The settlement service's fixed prices replace a window's price by its name.
                if windows.contains(where: { $0.name == name }) {
                    throw ConfigError(.badValue, key: "\(at).name", "\"\(name)\" names an earlier window too: give each window its own name")
                }
                if let other = windows.first(where: { $0.start < end && start < $0.end }) {
                    throw ConfigError(.badValue, key: at, "overlaps window \"\(other.name)\": at most one price may apply at a time")
                }
                windows.append(PriceWindow(name: name, start: start, end: end, price: price))
            }
            return windows
        }
    }
}

/// A JSON value, decoded strictly (a number is never a Bool, a string never a number).
enum JSONValue: Decodable, Hashable, Sendable {
    case null, bool(Bool), int(Int), double(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int.self) { self = .int(value) }
        else if let value = try? container.decode(Double.self) { self = .double(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }
}
