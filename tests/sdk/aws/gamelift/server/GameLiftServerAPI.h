// Declarations the docs' C++ examples use, transcribed (not copied) from the GameLift C++
// server SDK 5.4 headers aws/gamelift/server/model/ServerParameters.h and GameLiftServerAPI.h,
// in their GAMELIFT_USE_STD form, so that tests/test_client_snippets.py can compile the
// examples without the SDK. What matters is what the real headers enforce: ServerParameters'
// fields are private, and its constructor takes (webSocketUrl, authToken, fleetId, hostId,
// processId).
#pragma once

#include <string>

namespace Aws {
namespace GameLift {

class GameLiftError {};

template <typename R, typename E> class Outcome {
public:
    bool IsSuccess() const;
    const R &GetResult() const;
    const E &GetError() const;
};

namespace Internal {
class GameLiftServerState;
}

namespace Server {
namespace Model {

class ServerParameters {
public:
    ServerParameters() = default;
    ServerParameters(const std::string &websocketUrl, const std::string &authToken,
                     const std::string &fleetId, const std::string &hostId,
                     const std::string &processId);
    const std::string &GetWebSocketUrl() const;
    const std::string &GetAuthToken() const;
    const std::string &GetFleetId() const;
    const std::string &GetHostId() const;
    const std::string &GetProcessId() const;

private:
    std::string m_webSocketUrl;
    std::string m_fleetId;
    std::string m_processId;
    std::string m_hostId;
    std::string m_authToken;
};

} // namespace Model

typedef Outcome<Internal::GameLiftServerState *, GameLiftError> InitSDKOutcome;

InitSDKOutcome InitSDK();
InitSDKOutcome InitSDK(const Model::ServerParameters &serverParameters);

} // namespace Server
} // namespace GameLift
} // namespace Aws
