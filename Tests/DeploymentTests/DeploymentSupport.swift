import Foundation
import TestSupport

/// The package's root directory (this file is Tests/DeploymentTests/DeploymentSupport.swift).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The full path of a program on PATH (or in the usual system directories), or nil.
func tool(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let candidate = directory + "/" + name
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// A fresh temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String
    init(_ prefix: String) throws {
        path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// A directory holding cardctl, cardd and cardemu for `scripts/install --bin-dir`: symbolic links to the built
/// executables. cardd is the built one when it exists, else cardctl stands in for it (the unit checks need an
/// executable at ExecStart, not the daemon itself).
func stagedBinaries(in directory: TemporaryDirectory) throws -> String {
    let bin = directory.path + "/bin"
    try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
    let cardctl = try BuiltExecutable.path("cardctl")
    let cardd = (try? BuiltExecutable.path("cardd")) ?? cardctl
    try FileManager.default.createSymbolicLink(atPath: bin + "/cardctl", withDestinationPath: cardctl)
    try FileManager.default.createSymbolicLink(atPath: bin + "/cardd", withDestinationPath: cardd)
    try FileManager.default.createSymbolicLink(atPath: bin + "/cardemu", withDestinationPath: try BuiltExecutable.path("cardemu"))
    return bin
}

/// Runs scripts/install with `arguments`.
func install(_ arguments: [String]) -> (status: Int32, stdout: String, stderr: String) {
    run("/bin/bash", [packageRoot.appendingPathComponent("scripts/install").path] + arguments, timeout: 120)
}

/// The permission bits of a file.
func mode(of path: String) -> Int? {
    (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
}
