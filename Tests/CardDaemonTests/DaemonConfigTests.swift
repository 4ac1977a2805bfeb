import CampusCard
import CardDaemon
import Foundation
import Testing

@Suite struct DaemonConfigTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func parse(_ json: String, _ environment: [String: String] = [:]) throws(ConfigError) -> DaemonConfig {
        try DaemonConfig.parse(Data(json.utf8), environment: environment)
    }

    func error(_ json: String, _ environment: [String: String] = [:]) -> ConfigError? {
        do { _ = try parse(json, environment); return nil } catch { return error }
    }

    @Test func theExampleFileLoads() throws {
        let config = try DaemonConfig.load(path: Self.root.appendingPathComponent("systemd/cardd.example.json").path, environment: [:])
        #expect(config.terminalID == 2101)
        #expect(config.mode == .water)
        #expect(config.water.unitPrice == Fen(5))
        #expect(config.water.gpio?.valveLine == 17 && config.water.gpio?.meterLine == 27)
        #expect(config.windows.map(\.price) == [Fen(350), Fen(1_200)])
        #expect(config.windows.first?.start == 420 && config.windows.first?.end == 540)
        #expect(config.offline == .defaults)
        #expect(config.timeZone.identifier == "Asia/Shanghai")
    }

    @Test func minimalPOSConfigGetsTheDefaults() throws {
        let config = try parse(#"{"terminalID": 7, "mode": "pos"}"#)
        #expect(config.keystorePath == "/etc/onecard/keystore.json")
        #expect(config.storePath == "/var/lib/onecard/cardd.sqlite")
        #expect(config.controlSocketPath == "/run/onecard/cardd.sock")
        #expect(config.saleTimeout == 60 && config.windows.isEmpty)
        #expect(config.offline == .defaults)
        #expect(config.pos.saleTimeout == 60)
        #expect(config.pruneAcknowledgedAfter == 30 * 86_400)
    }

    @Test func uplinkIsOptionalAndCheckedWhenGiven() throws {
        #expect(try parse(#"{"terminalID": 7, "mode": "pos"}"#).uplink == nil)
        let config = try parse(#"{"terminalID": 7, "mode": "pos", "uplink": {"url": "https://settle.campus.example", "batchSize": 50}}"#,
                               ["ONECARD_UPLINK_INTERVAL_SECONDS": "5"])
        #expect(config.uplink?.url == "https://settle.campus.example")
        #expect(config.uplink?.secretFile == "/etc/onecard/uplink.secret")
        #expect(config.uplink?.batchSize == 50 && config.uplink?.interval == 5 && config.uplink?.timeout == 30 && config.uplink?.maxBackoff == 300)
        #expect(error(#"{"terminalID": 7, "mode": "pos", "uplink": {"url": "ftp://x"}}"#)?.key == "uplink.url")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "uplink": {"url": "https://x/api"}}"#)?.key == "uplink.url")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "uplink": {"url": "https://x", "batchSize": 5000}}"#)?.key == "uplink.batchSize")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "uplink": {"batchSize": 5}}"#)?.key == "uplink.url")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "uplink": {"url": "https://x", "secret": "00"}}"#)?.code == .unknownKey)
    }

    @Test func terminalIDAndModeAreRequiredAndChecked() {
        #expect(error(#"{"mode": "pos"}"#)?.key == "terminalID")
        #expect(error(#"{"mode": "pos"}"#)?.code == .missingKey)
        #expect(error(#"{"terminalID": 0, "mode": "pos"}"#)?.code == .badValue)
        #expect(error(#"{"terminalID": 65536, "mode": "pos"}"#)?.key == "terminalID")
        #expect(error(#"{"terminalID": "7", "mode": "pos"}"#)?.key == "terminalID")
        #expect(error(#"{"terminalID": 7}"#)?.key == "mode")
        #expect(error(#"{"terminalID": 7, "mode": "vending"}"#)?.message.contains("pos, water, settle") == true)
    }

    @Test func unknownKeysAreRefusedNamingThem() {
        let typo = error(#"{"terminalID": 7, "mode": "pos", "water": {"unitprice": "0.05"}}"#)
        #expect(typo?.code == .unknownKey)
        #expect(typo?.key == "water.unitprice")
        #expect(typo?.message.contains("water.unitPrice") == true)
        #expect(error(#"{"terminalID": 7, "mode": "pos", "colour": "red"}"#)?.key == "colour")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "pos": {"windows": [{"name": "a", "start": "07:00", "end": "08:00", "price": "1", "vat": 1}]}}"#)?.key == "pos.windows[0].vat")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "water": 5}"#)?.key == "water")
        #expect(error(#"[1]"#)?.code == .malformed)
        #expect(error(#"{"terminalID": 7,"#)?.code == .malformed)
        // Where the JSON breaks, by line and column, and no decoder's debug text.
        let broken = error("{\"terminalID\": 7,\n  \"mode\": pos\n}")
        #expect(broken?.code == .malformed && broken?.message.contains("line 2, column 11") == true, "\(broken?.message ?? "")")
        #expect(broken?.message.contains("DecodingError") == false)
        // A key twice is refused, whichever spelling: decoders disagree on which one wins.
        let twice = error(#"{"terminalID": 7, "mode": "pos", "offline": {"maxDebit": "1.00", "m\u0061xDebit": "900.00"}}"#)
        #expect(twice?.code == .malformed && twice?.message.contains("offline.maxDebit is given twice") == true, "\(twice?.message ?? "")")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "mode": "water"}"#)?.message.contains("mode is given twice") == true)
        // A byte-order mark (a Windows editor's) would hide the same from the check: refused, saying how to save it.
        let bom = Data([0xEF, 0xBB, 0xBF] + Array(#"{"terminalID": 7, "mode": "pos", "mode": "water"}"#.utf8))
        #expect(throws: ConfigError.self) { try DaemonConfig.parse(bom) }
        do { _ = try DaemonConfig.parse(bom) } catch { #expect(error.message.contains("without a byte-order mark"), "\(error.message)") }
    }

    @Test func amountsAreYuanStringsNeverNumbers() {
        #expect(error(#"{"terminalID": 7, "mode": "water", "water": {"unitPrice": 0.05, "backend": "simulated"}}"#)?.key == "water.unitPrice")
        #expect(error(#"{"terminalID": 7, "mode": "water", "water": {"unitPrice": "0.055", "backend": "simulated"}}"#)?.message.contains("two decimals") == true)
        #expect(error(#"{"terminalID": 7, "mode": "water", "water": {"unitPrice": "0", "backend": "simulated"}}"#)?.key == "water.unitPrice")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "offline": {"maxDebit": 100}}"#)?.key == "offline.maxDebit")
        // A limit of nothing would refuse every sale: off is null.
        #expect(error(#"{"terminalID": 7, "mode": "pos", "offline": {"maxDebit": "0.00"}}"#)?.key == "offline.maxDebit")
        #expect(error(#"{"terminalID": 7, "mode": "pos", "offline": {"maxUnsentTotal": "0"}}"#)?.key == "offline.maxUnsentTotal")
    }

    @Test func windowNamesAreOneEach() {
        let twice = error(#"{"terminalID": 7, "mode": "pos", "pos": {"windows": [{"name": "a", "start": "07:00", "end": "08:00", "price": "1.00"}, {"name": "a", "start": "11:00", "end": "12:00", "price": "2.00"}]}}"#)
        #expect(twice?.key == "pos.windows[1].name" && twice?.message.contains("names an earlier window") == true, "\(twice?.message ?? "")")
    }

    @Test func windowsAreChecked() {
        func window(_ body: String) -> ConfigError? { error(#"{"terminalID": 7, "mode": "pos", "pos": {"windows": [\#(body)]}}"#) }
        #expect(window(#"{"name": "a", "start": "7:00", "end": "09:00", "price": "3.50"}"#)?.key == "pos.windows[0].start")
        #expect(window(#"{"name": "a", "start": "09:00", "end": "08:00", "price": "3.50"}"#)?.key == "pos.windows[0].end")
        #expect(window(#"{"name": "a", "start": "07:00", "end": "09:00"}"#)?.code == .missingKey)
        #expect(window(#"{"name": "a", "start": "07:00", "end": "09:00", "price": "3.50"}, {"name": "b", "start": "08:30", "end": "10:00", "price": "1"}"#)?.key == "pos.windows[1]")
        #expect(window(#"{"name": "late", "start": "21:00", "end": "24:00", "price": "1"}"#) == nil)
    }

    @Test func waterWithGPIONeedsItsLines() {
        #expect(error(#"{"terminalID": 7, "mode": "water"}"#)?.key == "water.gpio.valveLine")
        #expect(error(#"{"terminalID": 7, "mode": "water", "water": {"gpio": {"valveLine": 3}}}"#)?.key == "water.gpio.meterLine")
        #expect(error(#"{"terminalID": 7, "mode": "water", "water": {"gpio": {"valveLine": 3, "meterLine": 3}}}"#)?.key == "water.gpio.meterLine")
        #expect(error(#"{"terminalID": 7, "mode": "water", "water": {"backend": "simulated", "pulsesPerUnit": 10, "prefetchPulses": 10}}"#)?.key == "water.prefetchPulses")
        #expect(error(#"{"terminalID": 7, "mode": "water", "water": {"backend": "simulated", "gpio": {"chip": "gpiochip0"}}}"#) == nil)  // unused: not checked
        #expect(error(#"{"terminalID": 7, "mode": "water", "water": {"gpio": {"chip": "gpiochip0", "valveLine": 1, "meterLine": 2}}}"#)?.key == "water.gpio.chip")
    }

    @Test func environmentOverridesNameTheirVariable() throws {
        let config = try parse(#"{"terminalID": 7, "mode": "pos"}"#, [
            "ONECARD_TERMINAL_ID": "42", "ONECARD_MODE": "water", "ONECARD_WATER_BACKEND": "simulated", "ONECARD_WATER_UNIT_PRICE": "0.10",
            "ONECARD_OFFLINE_MAX_DEBIT": "off", "ONECARD_POS_WINDOWS": #"[{"name": "tea", "start": "15:00", "end": "16:00", "price": "2"}]"#,
            "ONECARD_WATER_GPIO_ACTIVE_LOW": "true",
        ])
        #expect(config.terminalID == 42 && config.mode == .water && config.water.unitPrice == Fen(10))
        #expect(config.offline.maxDebit == nil)
        #expect(config.windows.map(\.name) == ["tea"])
        let bad = error(#"{"terminalID": 7, "mode": "pos"}"#, ["ONECARD_POS_SALE_TIMEOUT_SECONDS": "soon"])
        #expect(bad?.key == "ONECARD_POS_SALE_TIMEOUT_SECONDS (pos.saleTimeoutSeconds)")
        #expect(DaemonConfig.environmentName(of: "water.gpio.valveLine") == "ONECARD_WATER_GPIO_VALVE_LINE")
        #expect(DaemonConfig.unrecognisedEnvironment(["ONECARD_TERMINALID": "1", "ONECARD_MODE": "pos", "ONECARD_CONFIG": "/x", "HOME": "/"]) == ["ONECARD_TERMINALID"])
    }

    @Test func nullSwitchesALimitOff() throws {
        let config = try parse(#"{"terminalID": 7, "mode": "pos", "offline": {"maxBlacklistAgeHours": null, "maxUnsentCount": 20}}"#)
        #expect(config.offline.maxBlacklistAge == nil)
        #expect(config.offline.maxUnsentCount == 20)
        #expect(config.offline.maxDebit == OfflinePolicy.defaults.maxDebit)
    }

    @Test func aMissingFileIsUnreadable() {
        #expect { try DaemonConfig.load(path: "/nonexistent/cardd.json", environment: [:]) } throws: { ($0 as? ConfigError)?.code == .unreadable }
    }

    @Test func everyKeyIsDocumented() throws {
        let doc = try String(contentsOf: Self.root.appendingPathComponent("docs/cardd-config.md"), encoding: .utf8)
        for path in DaemonConfig.keyPaths {
            #expect(doc.contains("`\(path)`"), "docs/cardd-config.md lacks \(path)")
            #expect(doc.contains(DaemonConfig.environmentName(of: path)), "docs/cardd-config.md lacks \(DaemonConfig.environmentName(of: path))")
        }
    }
}
