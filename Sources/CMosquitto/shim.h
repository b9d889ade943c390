#ifndef CERTROT_CMOSQUITTO_SHIM_H
#define CERTROT_CMOSQUITTO_SHIM_H
#include <mosquitto.h>
#include <mqtt_protocol.h>
#endif
