// The generated message types live in `Messages` (pure: SwiftProtobuf only, so the pure cores can use them
// too); everything that speaks the protocol imports `Wire` and sees them through it.
@_exported public import Messages
