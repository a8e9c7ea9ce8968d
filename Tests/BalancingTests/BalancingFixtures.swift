import Balancing

/// `count` backends b0, b1, … on 10.0.0.1, 10.0.0.2, …, weight 1 unless given.
func makeBackends(_ count: Int, weights: [UInt32] = [], local: Set<Int> = [], maxConnections: Int = 0) -> [Backend] {
    (0..<count).map { index in
        Backend(id: "b\(index)", host: "10.0.0.\(index + 1)", port: 8080,
                weight: weights.isEmpty ? 1 : weights[index], node: local.contains(index) ? "here" : "n\(index)",
                isLocal: local.contains(index), maxConnections: maxConnections)
    }
}

/// The ip-hash of client number `client` (addresses 10.x.y.z).
func clientHash(_ client: Int) -> UInt64 {
    ClientHash.of([10, UInt8(truncatingIfNeeded: client >> 16), UInt8(truncatingIfNeeded: client >> 8),
                   UInt8(truncatingIfNeeded: client)])
}

extension Balancer {
    /// Where `state` stands in the current table (its backend's number for `makeBackends`).
    func position(of state: BackendState) -> Int {
        states.firstIndex { $0 === state } ?? -1
    }

    /// The backend number for one pick, or -1 when none.
    func pickPosition(client: Int = 0, nowMillis: UInt64 = 0, avoiding: [BackendState] = []) -> Int {
        guard let state = pick(clientHash: clientHash(client), nowMillis: nowMillis, avoiding: avoiding) else {
            return -1
        }
        return position(of: state)
    }

    /// `count` short connections (each closed before the next opens), client i being the i-th: how many each
    /// backend took, in table order.
    func shortConnections(_ count: Int, nowMillis: UInt64 = 0) -> [Int] {
        var counts = [Int](repeating: 0, count: states.count)
        for client in 0..<count {
            guard let state = pick(clientHash: clientHash(client), nowMillis: nowMillis) else { continue }
            opened(state)
            closed(state)
            counts[position(of: state)] += 1
        }
        return counts
    }

    /// Opens one connection to backend number `index` (as the data path does after a pick).
    func hold(_ index: Int, connections: Int = 1) {
        for _ in 0..<connections { opened(states[index]) }
    }

    /// Reports `count` failures of backend number `index` at `nowMillis`.
    func fail(_ index: Int, times count: Int, nowMillis: UInt64) {
        for _ in 0..<count { failed(states[index], nowMillis: nowMillis) }
    }
}

/// How far `count` of `draws` lies from the expected `share`, in binomial standard deviations.
func sigmas(_ count: Int, of draws: Int, share: Double) -> Double {
    let expected = Double(draws) * share
    return abs(Double(count) - expected) / (Double(draws) * share * (1 - share)).squareRoot()
}

func shares(_ counts: [Int]) -> [Double] {
    let total = Double(counts.reduce(0, +))
    return counts.map { Double($0) / total }
}

func formatted(_ values: [Double]) -> String {
    values.map { String(Int(($0 * 1000).rounded())) + "‰" }.joined(separator: " ")
}
