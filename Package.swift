// swift-tools-version: 6.2
import PackageDescription

// The package's folder, for a linker input named by path (cardd's function order).
let packageRoot = String(#filePath.dropLast("/Package.swift".count))

// Strict settings for every Swift target, applied in one place (house style 12).
let strictSwift: [SwiftSetting] = [
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "OneCard",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "cardctl", targets: ["cardctl"]),
        .executable(name: "cardemu", targets: ["cardemu"]),
        .executable(name: "cardbench", targets: ["cardbench"]),
        .executable(name: "cardd", targets: ["cardd"]),
        .library(name: "PCSC", targets: ["PCSC"]),
        .library(name: "MifareClassic", targets: ["MifareClassic"]),
        .library(name: "CardReader", targets: ["CardReader"]),
        .library(name: "CardEmulator", targets: ["CardEmulator"]),
        .library(name: "CampusCard", targets: ["CampusCard"]),
        .library(name: "CardSession", targets: ["CardSession"]),
        .library(name: "DaemonSupport", targets: ["DaemonSupport"]),
        .library(name: "BuildInfo", targets: ["BuildInfo"]),
        .library(name: "CardDaemon", targets: ["CardDaemon"]),
        .library(name: "TerminalStore", targets: ["TerminalStore"]),
        .library(name: "SettlementCore", targets: ["SettlementCore"]),
        .library(name: "SettlementPostgres", targets: ["SettlementPostgres"]),
        .library(name: "SettlementServer", targets: ["SettlementServer"]),
        .executable(name: "settlementd", targets: ["settlementd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
        // async-http-client's own dependency, named for NIOPosix: the uplink's client owns (and joins) its one
        // event loop thread instead of the process-wide singleton, whose threads never end.
        .package(url: "https://github.com/apple/swift-nio", from: "2.60.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.21.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
    ],
    targets: [
        // The C binding: only the PCSC module imports it.
        .systemLibrary(
            name: "CPCSCLite",
            pkgConfig: "libpcsclite",
            providers: [.apt(["libpcsclite-dev"])]
        ),
        .target(name: "PCSC", dependencies: ["CPCSCLite", "SmartCard"], swiftSettings: strictSwift),
        // glibc's malloc_trim, for cardd alone.
        .systemLibrary(name: "CMalloc"),
        // APDU values, status words, ATRs and the synchronous channel protocol. No I/O.
        .target(name: "SmartCard", swiftSettings: strictSwift),
        // MIFARE Classic as pure values: geometry, trailers, access bits, value blocks, dumps.
        .target(name: "MifareClassic", swiftSettings: strictSwift),
        // Reader profiles and MIFARE operations over any channel (no PC/SC: tests run it over the emulator in-process).
        .target(name: "CardReader", dependencies: ["SmartCard", "MifareClassic"], swiftSettings: strictSwift),
        // Reader firmware + card emulator, in-process and over vpcd.
        .target(name: "CardEmulator", dependencies: ["SmartCard", "MifareClassic"], swiftSettings: strictSwift),
        // The campus card application: layout, keys, MACs, purse and water-wallet operations.
        .target(
            name: "CampusCard",
            dependencies: [
                "SmartCard", "MifareClassic", "CardReader",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSwift
        ),
        // A card on a PC/SC reader, ready for card sessions: reader choice, ATR, profile, re-select; campus card
        // sessions reported as values. Shared by cardctl and cardd.
        .target(
            name: "CardSession",
            dependencies: [
                "PCSC", "SmartCard", "MifareClassic", "CardReader", "CampusCard",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        // The daemon's service plumbing: sd_notify, a journald log handler, the control socket. No card code.
        .target(
            name: "DaemonSupport",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSwift
        ),
        // BuildInfo.version and .commit for --version; the commit is generated before each build.
        .target(name: "BuildInfo", swiftSettings: strictSwift, plugins: ["BuildInfoPlugin"]),
        .plugin(name: "BuildInfoPlugin", capability: .buildTool()),
        // The GPIO character device's uAPI v2 structs and ioctl numbers (<linux/gpio.h>): only CardDaemon imports it.
        .target(name: "CGPIO"),
        // cardd's pure core: mode state machines, offline policy, config, valve and flow meter backends.
        .target(name: "CardDaemon", dependencies: ["CampusCard", "CGPIO", "StrictJSON"], swiftSettings: strictSwift),
        // What JSONDecoder lets through and our bodies and files must not carry (a key twice, `1e3` for a count).
        .target(name: "StrictJSON", swiftSettings: strictSwift),
        // The terminal's durable store (SQLite through GRDB): journal, upload queue, blacklist.
        .target(
            name: "TerminalStore",
            dependencies: ["CampusCard", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strictSwift
        ),
        // The settlement service's shared core: the upload records, the store protocol, the ledger rules, request
        // signing. Pure values; cardd's uplink and settlementd both use it.
        .target(
            name: "SettlementCore",
            dependencies: ["CampusCard", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSwift
        ),
        // A signed client of the settlement service (docs/settlement-api.yaml) over AsyncHTTPClient: cardd's uplink,
        // cardctl and the tests use it.
        .target(
            name: "SettlementClient",
            dependencies: [
                "SettlementCore", "CampusCard",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "cardctl",
            dependencies: [
                "PCSC", "SmartCard", "MifareClassic", "CardReader", "CampusCard", "CardSession", "BuildInfo", "TerminalStore", "DaemonSupport",
                "SettlementCore", "SettlementClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        // The terminal daemon: the reader loop, the mode machine, the store and the control socket, wired.
        .executableTarget(
            name: "cardd",
            dependencies: [
                "PCSC", "SmartCard", "CardReader", "CampusCard", "CardSession", "CardDaemon", "TerminalStore", "DaemonSupport", "BuildInfo",
                "SettlementCore", "SettlementClient", "CMalloc",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["hot-functions.order"],
            swiftSettings: strictSwift,
            // Resident memory (HardwareNotes "cardd's memory"): lld packs the relative relocations (DT_RELR, needs
            // glibc >= 2.36) and exports no dynamic symbol table, both of which the loader reads at every start.
            // scripts/install and scripts/bench-daemon also link the Swift runtime and Foundation statically
            // (--static-swift-stdlib; as an unsafe flag here it misses Foundation's ICU archive).
            // The functions a box runs (start, sales, stop) go first and together (scripts/cardd-hot-functions writes
            // the list): with the kernel's 64 KiB fault-around, scattered hot code had made 16 MiB of text resident.
            linkerSettings: [
                .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic",
                              "-Xlinker", "--symbol-ordering-file=\(packageRoot)/Sources/cardd/hot-functions.order",
                              "-Xlinker", "--no-warn-symbol-ordering"]),
            ]
        ),
        .executableTarget(
            name: "cardemu",
            dependencies: [
                "CardEmulator", "MifareClassic", "SmartCard", "BuildInfo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        // The benchmark's floor: a plain C loop over SCardTransmit.
        .target(name: "CBenchLoop", dependencies: ["CPCSCLite"]),
        .executableTarget(
            name: "cardbench",
            dependencies: [
                "PCSC", "SmartCard", "MifareClassic", "CardReader", "CardEmulator", "CampusCard", "CBenchLoop", "BuildInfo", "TerminalStore",
                // `cardbench daemon`: cardd's control socket client, and the library tap it is compared with.
                "DaemonSupport", "CardSession",
                // The raw SQLite loop the store's commit rate is compared with.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(name: "SmartCardTests", dependencies: ["SmartCard"], swiftSettings: strictSwift),
        .testTarget(name: "MifareClassicTests", dependencies: ["MifareClassic", "TestSupport"], resources: [.copy("Fixtures")], swiftSettings: strictSwift),
        .testTarget(name: "CardReaderTests", dependencies: ["CardReader", "SmartCard", "MifareClassic", "CardEmulator", "TestSupport"], swiftSettings: strictSwift),
        .testTarget(name: "CardEmulatorTests", dependencies: ["CardEmulator", "SmartCard", "MifareClassic", "TestSupport"], swiftSettings: strictSwift),
        // Shared by the test targets: starts pcscd and the emulator on a vpcd port, finds built executables.
        .target(name: "TestSupport", dependencies: ["CardEmulator", "SmartCard", "MifareClassic", "DaemonSupport"], path: "Tests/TestSupport", swiftSettings: strictSwift),
        // cardd as a process: through pcscd, the emulator and its control socket.
        .testTarget(name: "DaemonTests", dependencies: ["TestSupport", "DaemonSupport"], swiftSettings: strictSwift),
        // cardd's uplink against a real settlementd (SQLite) on loopback, through pcscd and the emulator.
        .testTarget(
            name: "UplinkTests",
            dependencies: ["TestSupport", "DaemonSupport", "SettlementClient", "SettlementCore", "CampusCard", "TerminalStore"],
            swiftSettings: strictSwift
        ),
        .testTarget(name: "PCSCTests", dependencies: ["PCSC", "SmartCard", "CardEmulator", "TestSupport"], swiftSettings: strictSwift),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["PCSC", "SmartCard", "MifareClassic", "CardReader", "CardEmulator", "TestSupport"],
            swiftSettings: strictSwift
        ),
        .testTarget(name: "CardDaemonTests", dependencies: ["CardDaemon", "CampusCard"], swiftSettings: strictSwift),
        .testTarget(
            name: "DaemonSupportTests",
            dependencies: ["DaemonSupport", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSwift
        ),
        // The deployment files and built executables, checked with the real tools (systemd-analyze, scripts/install).
        .testTarget(name: "DeploymentTests", dependencies: ["BuildInfo", "TestSupport"], swiftSettings: strictSwift),
        .testTarget(
            name: "CampusCardTests",
            dependencies: ["CampusCard", "CardEmulator", "CardReader", "MifareClassic", "SmartCard", "TestSupport"],
            resources: [.copy("Vectors")],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "TerminalStoreTests",
            dependencies: ["TerminalStore", "CampusCard", "TestSupport", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strictSwift
        ),
        // The settlement store on SQLite through GRDB: settlementd's embedded default (`--db PATH`).
        .target(name: "SettlementSQLite", dependencies: ["SettlementCore", "CampusCard", .product(name: "GRDB", package: "GRDB.swift"), .product(name: "GRDBSQLite", package: "GRDB.swift")], swiftSettings: strictSwift),
        // The ledger rules and request signing as pure values.
        .testTarget(name: "SettlementCoreTests", dependencies: ["SettlementCore", "CampusCard", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strictSwift),
        // The store conformance suite, once, over every backend in Backends.swift.
        .testTarget(name: "SettlementStoreTests", dependencies: ["SettlementCore", "SettlementSQLite", "CampusCard", "SettlementPostgres", "TestSupport", .product(name: "Logging", package: "swift-log"), .product(name: "GRDB", package: "GRDB.swift")], swiftSettings: strictSwift),
        // `settlebench ingest`: ingest with every ledger rule beside a plain batched INSERT of the same rows.
        .executableTarget(
            name: "settlebench",
            dependencies: [
                "SettlementCore", "SettlementSQLite", "CampusCard",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // `--postgres URL`: the PostgreSQL store beside a plain unnest INSERT and COPY.
                "SettlementPostgres",
                // `upload`: settlementd's application in-process on loopback, and the terminal's client.
                "SettlementServer", "SettlementClient",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        // The settlement store on PostgreSQL (postgres-nio): settlementd at scale, several instances on one database.
        .target(
            name: "SettlementPostgres",
            dependencies: [
                "SettlementCore", "CampusCard",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        // The PostgreSQL store against a throwaway cluster (scripts/postgres): concurrency, restarts.
        .testTarget(
            name: "SettlementPostgresTests",
            dependencies: ["SettlementPostgres", "SettlementCore", "CampusCard", "TestSupport", .product(name: "PostgresNIO", package: "postgres-nio")],
            swiftSettings: strictSwift
        ),
        // settlementd's HTTP application over any SettlementStore: routes, request signing, body caps, validation.
        .target(
            name: "SettlementServer",
            dependencies: [
                "SettlementCore", "CampusCard", "StrictJSON",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "settlementd",
            dependencies: [
                "SettlementServer", "SettlementCore", "SettlementSQLite", "SettlementPostgres", "BuildInfo",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "SettlementServerTests",
            dependencies: [
                "SettlementServer", "SettlementClient", "SettlementCore", "SettlementSQLite", "CampusCard", "TestSupport", "StrictJSON",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
    ]
)
