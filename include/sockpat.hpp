// sockpat: the umbrella header. Includes every public header and nothing else.
#ifndef SOCKPAT_HPP
#define SOCKPAT_HPP

#include "sockpat/backoff.hpp"
#include "sockpat/client.hpp"
#include "sockpat/connection.hpp"
#include "sockpat/deadline.hpp"
#include "sockpat/endpoint.hpp"
#include "sockpat/error.hpp"
#include "sockpat/event_loop.hpp"
#include "sockpat/framing.hpp"
#include "sockpat/listener.hpp"
#include "sockpat/peer.hpp"
#include "sockpat/peer_wire.hpp"
#include "sockpat/protocol.hpp"
#include "sockpat/rendezvous.hpp"
#include "sockpat/request_server.hpp"
#include "sockpat/resolver.hpp"
#include "sockpat/server.hpp"
#include "sockpat/signals.hpp"
#include "sockpat/socket.hpp"
#include "sockpat/streams.hpp"
#include "sockpat/sync.hpp"
#include "sockpat/task.hpp"
#include "sockpat/task_group.hpp"
#include "sockpat/version.hpp"

#endif  // SOCKPAT_HPP
