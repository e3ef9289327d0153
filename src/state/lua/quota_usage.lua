-- Returns {messages last hour, recipients last hour, recipients last day}.
return {used(KEYS[3], KEYS[4], 3600), used(KEYS[5], KEYS[6], 3600), used(KEYS[7], KEYS[8], 86400)}
