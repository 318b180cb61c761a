// Catch2 main for all attnrag test programs.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
