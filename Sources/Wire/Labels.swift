public import Messages

extension Flotilla_V1_Label {
    /// Labels as the protocol carries them: one message per pair, sorted by key (so the bytes are stable).
    public static func list(_ labels: [String: String]) -> [Flotilla_V1_Label] {
        labels.sorted { $0.key < $1.key }.map { key, value in
            var label = Flotilla_V1_Label()
            label.key = key
            label.value = value
            return label
        }
    }
}
